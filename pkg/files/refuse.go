package files

import (
	"fmt"
	"strings"
)

// What cr refuses whatever the kind of file: anonymous-inode files no kind
// recognises, and locked files.

// anonKinds names the anonymous-inode files cr cannot save yet, by the
// name the kernel gives them in /proc/PID/fd ("anon_inode:[pidfd]",
// "anon_inode:inotify", ...), with the article.
var anonKinds = map[string]string{
	"pidfd":            "a pidfd",
	"inotify":          "an inotify instance",
	"fanotify":         "a fanotify group",
	"userfaultfd":      "a userfaultfd",
	"io_uring":         "an io_uring instance",
	"perf_event":       "a perf_event",
	"bpf-map":          "a BPF map",
	"bpf-prog":         "a BPF program",
	"bpf_link":         "a BPF link",
	"bpf-link":         "a BPF link",
	"bpf_iter":         "a BPF iterator",
	"btf":              "a BPF type (BTF) object",
	"dmabuf":           "a DMA buffer",
	"sync_file":        "a sync_file",
	"kvm-vm":           "a KVM virtual machine",
	"kvm-vcpu":         "a KVM virtual CPU",
	"vfio-device":      "a VFIO device",
	"landlock-ruleset": "a Landlock ruleset",
	"timerfd":          "a timerfd",
	"eventfd":          "an eventfd",
	"eventpoll":        "an epoll instance",
}

// anonKind describes the anonymous-inode file whose fd link reads target
// ("anon_inode:[signalfd]"), with the right article.
func anonKind(target string) string {
	kind := strings.Trim(strings.TrimPrefix(target, "anon_inode:"), "[]")
	if d, ok := anonKinds[kind]; ok {
		return d
	}
	return fmt.Sprintf("an anonymous-inode file of kind %q", kind)
}

// lockLines returns the "lock:" lines of an fdinfo text (fs/proc/fd.c,
// show_fd_locks in fs/locks.c): the locks this fd's process (POSIX) or
// open file description (flock, OFD, lease) holds on the file.
func lockLines(info string) []string {
	var out []string
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(line, "lock:"); ok {
			out = append(out, strings.TrimSpace(v))
		}
	}
	return out
}

// describeLock turns a lock line ("1: POSIX  ADVISORY  WRITE 4242
// fe:00:1234 10 29", lock_get_status in fs/locks.c) into words: "a POSIX
// (fcntl) write lock on bytes 10-29".
func describeLock(line string) string {
	f := strings.Fields(line)
	if len(f) < 8 {
		return "a lock (" + line + ")"
	}
	kind := map[string]string{"POSIX": "POSIX (fcntl)", "FLOCK": "flock", "OFDLCK": "OFD (open file description)",
		"LEASE": "lease", "DELEG": "delegation"}[f[1]]
	if kind == "" {
		kind = f[1]
	}
	mode := strings.ToLower(f[3])
	if f[1] == "LEASE" || f[1] == "DELEG" {
		mode = strings.ToLower(f[3]) + ", " + strings.ToLower(f[2])
	}
	rng := "the whole file"
	if f[6] != "0" || f[7] != "EOF" {
		rng = fmt.Sprintf("bytes %s-%s", f[6], f[7])
	}
	words := kind + " " + mode
	if f[1] == "FLOCK" {
		words = flockMode(mode) + " flock"
	}
	art := "a"
	if strings.ContainsRune("aeiouAEIOU", rune(words[0])) {
		art = "an"
	}
	return fmt.Sprintf("%s %s lock on %s", art, words, rng)
}

// flockMode names the mode of a flock(2) lock, which fdinfo shows as
// "read" or "write" (LOCK_SH or LOCK_EX): "shared" or "exclusive".
func flockMode(typ string) string {
	switch typ {
	case "read":
		return "shared"
	case "write":
		return "exclusive"
	}
	return typ
}

// lockError refuses an fd whose file is locked when locks are not saved
// (without --file-locks): a restore without them would silently drop them.
func lockError(fd int, target string, locks []string) error {
	var d []string
	for _, l := range locks {
		d = append(d, describeLock(l))
	}
	return &UnsupportedError{Fd: fd, What: fmt.Sprintf("%s, holding %s", target, strings.Join(d, " and ")), Option: "--file-locks"}
}
