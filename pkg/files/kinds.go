package files

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// anonKinds names the anonymous-inode files cr cannot save yet, by the
// name the kernel gives them in /proc/PID/fd ("anon_inode:[pidfd]",
// "anon_inode:inotify", ...), with the article.
var anonKinds = map[string]string{
	"pidfd":            "a pidfd",
	"signalfd":         "a signalfd",
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

// Filesystem magic numbers (include/uapi/linux/magic.h).
const (
	procSuperMagic = 0x9fa0
	secretmemMagic = 0x5345434d
)

func fsMagic(path string) int64 {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0
	}
	return int64(st.Type)
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
	art := "a"
	if strings.HasPrefix(kind, "O") {
		art = "an"
	}
	return fmt.Sprintf("%s %s %s lock on %s", art, kind, mode, rng)
}

// lockError refuses an fd whose file is locked: locks are not restored yet,
// and a restore without them would silently drop them.
func lockError(fd int, target string, locks []string) error {
	var d []string
	for _, l := range locks {
		d = append(d, describeLock(l))
	}
	return &UnsupportedError{Fd: fd, What: fmt.Sprintf("%s, holding %s", target, strings.Join(d, " and "))}
}

// procPathOf tells whether target, the path an fd of pid (or its cwd or
// root) names, is a procfs path naming a process: /proc/N/... Such a path
// is recorded relative to N. link is the /proc/PID/... link to the file.
func procPathOf(link, target string) *image.ProcPath {
	rest, ok := strings.CutPrefix(target, "/proc/")
	if !ok || fsMagic(link) != procSuperMagic {
		return nil
	}
	first, rel, _ := strings.Cut(rest, "/")
	n, err := strconv.Atoi(first)
	if err != nil || n <= 0 || strconv.Itoa(n) != first {
		return nil // /proc/meminfo, /proc/sys/...: the same for everyone
	}
	return &image.ProcPath{Pid: n, Rel: rel}
}

// ProcPathString is the path restore opens for p: /proc/Pid/Rel.
func ProcPathString(p *image.ProcPath) string {
	if p.Rel == "" {
		return fmt.Sprintf("/proc/%d", p.Pid)
	}
	return fmt.Sprintf("/proc/%d/%s", p.Pid, p.Rel)
}

// procUse is a procfs path an fd, cwd or root of a process names.
type procUse struct {
	pid, fd int    // fd -1: cwd or root
	what    string // "cwd", "root", or "" for an fd
	path    *image.ProcPath
	flags   int // open flags, for a trial open
}

// checkProcPaths makes sure restore can reopen every procfs path naming a
// process: the process must be one of the collection (a running process of
// the dumped tree) and the path must name it or its main thread (threads
// are created after the files on restore), and cr must be able to open it
// now as restore will.
func (c *Collector) checkProcPaths() error {
uses:
	for _, u := range c.procUses {
		path := ProcPathString(u.path)
		refuse := func(format string, args ...any) error {
			what := fmt.Sprintf("%s, which names pid %d, ", path, u.path.Pid) + fmt.Sprintf(format, args...)
			if u.fd < 0 {
				what = "the " + u.what + " " + what
			}
			return &UnsupportedError{Pid: u.pid, Fd: u.fd, What: what}
		}
		n := u.path.Pid
		if _, ok := c.procs[n]; !ok {
			for p := range c.procs {
				if _, err := os.Stat(fmt.Sprintf("/proc/%d/task/%d", p, n)); err == nil {
					c.refuse(refuse("a thread of pid %d other than its main thread (only a process or its main thread can be named)", p))
					continue uses
				}
			}
			c.refuse(refuse("a process outside the dumped tree (or not running)"))
			continue uses
		}
		if t, ok := strings.CutPrefix(u.path.Rel, "task/"); ok {
			tid, _, _ := strings.Cut(t, "/")
			if tid != strconv.Itoa(n) {
				c.refuse(refuse("thread %s, not the main thread (only a process or its main thread can be named)", tid))
				continue uses
			}
		}
		flags := u.flags&^(unix.O_CREAT|unix.O_EXCL|unix.O_TRUNC|unix.O_NOCTTY) | unix.O_CLOEXEC | unix.O_NOCTTY
		fd, err := unix.Open(path, flags, 0)
		if err != nil {
			c.refuse(refuse("restore could not reopen it: %v", err))
			continue uses
		}
		unix.Close(fd)
	}
	return nil
}

// AddFS reads the cwd and root of pid (ReadFS), remembering procfs paths
// for the checks of Finish.
func (c *Collector) AddFS(pid int) (image.FS, error) {
	fs, err := ReadFS(pid)
	if err != nil {
		return fs, err
	}
	for _, x := range []struct {
		name string
		id   *image.FileIdent
	}{{"cwd", &fs.Cwd}, {"root", &fs.Root}} {
		if x.id.Proc != nil {
			c.procUses = append(c.procUses, procUse{pid: pid, fd: -1, what: x.name, path: x.id.Proc, flags: unix.O_RDONLY | unix.O_DIRECTORY})
		}
	}
	return fs, nil
}
