package files

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// procSuperMagic is procfs's magic number (include/uapi/linux/magic.h).
const procSuperMagic = 0x9fa0

// fsMagic is the magic number of the filesystem path is on (statfs(2)), 0
// if unknown.
func fsMagic(path string) int64 {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0
	}
	return int64(st.Type)
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
					c.Refuse(refuse("a thread of pid %d other than its main thread (only a process or its main thread can be named)", p))
					continue uses
				}
			}
			c.Refuse(refuse("a process outside the dumped tree (or not running)"))
			continue uses
		}
		if t, ok := strings.CutPrefix(u.path.Rel, "task/"); ok {
			tid, _, _ := strings.Cut(t, "/")
			if tid != strconv.Itoa(n) {
				c.Refuse(refuse("thread %s, not the main thread (only a process or its main thread can be named)", tid))
				continue uses
			}
		}
		flags := u.flags&^(unix.O_CREAT|unix.O_EXCL|unix.O_TRUNC|unix.O_NOCTTY) | unix.O_CLOEXEC | unix.O_NOCTTY
		fd, err := unix.Open(path, flags, 0)
		if err != nil {
			c.Refuse(refuse("restore could not reopen it: %v", err))
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

// CheckProcPath checks, before a restore, a procfs path naming a process of
// the image (in: the image's processes by pid): the process must be a live
// one of the image, the path must stay below /proc/PID, and a task/TID part
// must name its main thread (threads are made after the files).
func CheckProcPath(in map[int]*image.Process, p *image.ProcPath) error {
	q := in[p.Pid]
	if q == nil || q.Task.Zombie {
		return fmt.Errorf("image is inconsistent: it names pid %d, which is not a live process of the image", p.Pid)
	}
	if strings.Contains("/"+p.Rel+"/", "/../") {
		return fmt.Errorf("image is inconsistent: procfs path %q leaves /proc/%d", p.Rel, p.Pid)
	}
	if t, ok := strings.CutPrefix(p.Rel, "task/"); ok {
		if tid, _, _ := strings.Cut(t, "/"); tid != fmt.Sprint(p.Pid) {
			return fmt.Errorf("image is inconsistent: it names thread %s of pid %d, not its main thread", tid, p.Pid)
		}
	}
	return nil
}

// reopenPath is the path restore opens a description by path with: its
// path at the dump, or for a procfs path naming a process of the image the
// restored process's (same pid).
func reopenPath(f *image.File) string {
	if f.Ident.Proc != nil {
		return ProcPathString(f.Ident.Proc)
	}
	return f.Ident.Path
}

// openPath reopens a description by path (reopenPath) with its flags, less
// the creation ones, close-on-exec and never as a controlling terminal.
func openPath(path string, flags uint32) (int, error) {
	fl := int(flags) &^ (unix.O_CREAT | unix.O_EXCL | unix.O_TRUNC | unix.O_NOCTTY)
	fd, err := unix.Open(path, fl|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", path, err)
	}
	return fd, nil
}

// checkOnDisk checks, before a restore, that the file f was opened by is
// still there and of the same type (stat(2), or lstat(2) with nofollow);
// st is what it found.
func checkOnDisk(f *image.File, nofollow bool) (*unix.Stat_t, error) {
	var st unix.Stat_t
	stat := unix.Stat
	if nofollow {
		stat = unix.Lstat
	}
	if err := stat(f.Ident.Path, &st); err != nil {
		return nil, fmt.Errorf("open file %s (file %d): %w", f.Ident.Path, f.ID, err)
	}
	if st.Mode&unix.S_IFMT != f.Ident.Mode&unix.S_IFMT {
		return nil, &ChangedFileError{Path: f.Ident.Path, What: "it is a different kind of file now"}
	}
	return &st, nil
}
