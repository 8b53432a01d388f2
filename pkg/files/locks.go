package files

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unsafe"

	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// File locks (--file-locks): flock(2) locks, POSIX record locks
// (fcntl F_SETLK) and OFD locks (F_OFD_SETLK), saved from the "lock:"
// lines of /proc/PID/fdinfo/FD and taken again at the very end of each
// process's build (TakeLocks), once every fd and mapping of the file
// exists, so that no close made while rebuilding drops them.
//
// Which fd shows a lock (show_fd_locks in fs/locks.c): a lock is listed on
// an fd whose open file description is the one the lock was taken
// through, and, for a POSIX lock, only in the fdinfo of its owner (the
// process whose fd table took it); a flock or OFD lock is owned by the
// description and shows on every fd of every process holding it. So a
// POSIX lock is saved with its process (FileLock.Pid) on the description
// it was taken through, a flock or OFD lock once on its description. Locks
// a process is blocked waiting for are not listed (its syscall restarts
// after the restore). Leases and delegations are refused, naming them.
//
// CRIU (criu/file-lock.c) takes the locks before it restores the memory
// mappings, and the fd it opens for a mapped file is closed afterwards,
// which drops the process's POSIX locks on that file (the sqlite WAL -shm
// pattern): here they are taken last.

// dumpLocks fills f.Locks from the fd's lock lines (p.Info). A POSIX lock's
// owner is the process being read (p.Pid): its fdinfo lists only its own.
func dumpLocks(p *Probe, f *image.File) error {
	for _, line := range lockLines(p.Info) {
		l, err := parseLock(line)
		if err != nil {
			what := describeLock(line)
			if f := strings.Fields(line); len(f) > 3 && (f[1] == "LEASE" || f[1] == "DELEG") {
				what = fmt.Sprintf("a %s %s (fcntl F_SETLEASE, %s)", strings.ToLower(f[3]), map[string]string{"LEASE": "lease", "DELEG": "delegation"}[f[1]], strings.ToLower(f[2]))
			}
			return &UnsupportedError{Fd: p.Fd, What: fmt.Sprintf("%s, holding %s", p.Target, what)}
		}
		switch l.Kind {
		case image.LockPOSIX:
			l.Pid = p.Pid
		case image.LockOFD:
			l.Pid = 0
		}
		f.Locks = append(f.Locks, l)
	}
	return nil
}

// parseLock reads one lock line ("1: POSIX  ADVISORY  WRITE 4242
// fe:00:1234 10 29": id, kind, ADVISORY, READ/WRITE, pid, dev:ino, first
// byte, last byte or EOF). Leases, delegations and anything else are an
// error.
func parseLock(line string) (image.FileLock, error) {
	var l image.FileLock
	f := strings.Fields(line)
	if len(f) < 8 {
		return l, fmt.Errorf("short lock line %q", line)
	}
	switch f[1] {
	case "POSIX":
		l.Kind = image.LockPOSIX
	case "OFDLCK":
		l.Kind = image.LockOFD
	case "FLOCK":
		l.Kind = image.LockFlock
	default:
		return l, fmt.Errorf("a %s lock", f[1])
	}
	if f[2] != "ADVISORY" {
		return l, fmt.Errorf("a %s lock", f[2])
	}
	switch f[3] {
	case "READ":
		l.Type = "read"
	case "WRITE":
		l.Type = "write"
	default:
		return l, fmt.Errorf("a lock of type %s", f[3])
	}
	if l.Kind == image.LockFlock {
		l.Pid, _ = strconv.Atoi(f[4])
		if l.Pid < 0 {
			l.Pid = 0
		}
	}
	var err error
	if l.Start, err = strconv.ParseInt(f[6], 10, 64); err != nil {
		return l, fmt.Errorf("lock start %q: %w", f[6], err)
	}
	if f[7] == "EOF" {
		l.End = -1
	} else if l.End, err = strconv.ParseInt(f[7], 10, 64); err != nil {
		return l, fmt.Errorf("lock end %q: %w", f[7], err)
	}
	return l, nil
}

// mergeLocks adds to the description id the POSIX locks another process
// holds through it, seen on that process's fd (its flock and OFD locks are
// the description's, saved with it already; a process's fds that share
// the description all list its POSIX locks, saved once).
func (c *Collector) mergeLocks(id int, locks []image.FileLock) {
	for i := range c.Files {
		f := &c.Files[i]
		if f.ID != id {
			continue
		}
		have := map[int]bool{}
		for _, l := range f.Locks {
			if l.Kind == image.LockPOSIX {
				have[l.Pid] = true
			}
		}
		for _, l := range locks {
			if l.Kind == image.LockPOSIX && !have[l.Pid] {
				f.Locks = append(f.Locks, l)
			}
		}
		return
	}
}

// validateLocks checks a loaded record's locks against their domain and
// the image: a POSIX lock's owner is a process of the image that holds
// the description.
func validateLocks(c *image.Checkpoint, f *image.File) error {
	for _, l := range f.Locks {
		switch l.Kind {
		case image.LockPOSIX, image.LockOFD, image.LockFlock:
		default:
			return fmt.Errorf("a lock of unknown kind %q", l.Kind)
		}
		if l.Type != "read" && l.Type != "write" {
			return fmt.Errorf("a %s lock of unknown type %q", l.Kind, l.Type)
		}
		if l.Start < 0 || (l.End != -1 && l.End < l.Start) {
			return fmt.Errorf("a %s lock on the bad range %d-%d", l.Kind, l.Start, l.End)
		}
		if l.Kind == image.LockFlock && (l.Start != 0 || l.End != -1) {
			return fmt.Errorf("a flock lock on a range (%d-%d)", l.Start, l.End)
		}
		if l.Kind == image.LockPOSIX && !holds(c, l.Pid, f.ID) {
			return fmt.Errorf("a POSIX lock of pid %d, which does not hold the file in the image", l.Pid)
		}
	}
	return nil
}

// holds tells whether process pid of the image (not a zombie) has an fd of
// file id.
func holds(c *image.Checkpoint, pid, id int) bool {
	for _, p := range c.Processes {
		if p.Task.Pid != pid || p.Task.Zombie {
			continue
		}
		for _, e := range p.Fds {
			if e.FileID == id {
				return true
			}
		}
	}
	return false
}

// HasLocks returns a description of the image that holds locks (nil: none).
func HasLocks(c *image.Checkpoint) *image.File {
	for i := range c.Files {
		if len(c.Files[i].Locks) > 0 {
			return &c.Files[i]
		}
	}
	return nil
}

// lockTaker returns the pid of the process that takes lock l of file f at
// restore: a POSIX lock's owner; for a flock, the process that took it if
// it holds the description, else, as for an OFD lock, the first process of
// the image that holds it.
func lockTaker(c *image.Checkpoint, f *image.File, l image.FileLock) int {
	if l.Kind == image.LockPOSIX || (l.Kind == image.LockFlock && l.Pid != 0 && holds(c, l.Pid, f.ID)) {
		return l.Pid
	}
	for _, p := range c.Processes {
		if holds(c, p.Task.Pid, f.ID) {
			return p.Task.Pid
		}
	}
	return 0
}

// TakeLocks takes, in the task t, the locks of the image that are its to
// take (lockTaker) on its restored fds, without waiting: POSIX locks with
// fcntl F_SETLK, OFD locks with F_OFD_SETLK, flocks with flock(LOCK_NB).
// pkg/restore calls it for each process once it is completely built,
// before any process is let go. A lock another process holds now in the
// way is an error naming the file, the lock and the holder if the kernel
// tells (F_GETLK).
func TakeLocks(t Task, c *image.Checkpoint) error {
	for i := range c.Files {
		f := &c.Files[i]
		for _, l := range f.Locks {
			if lockTaker(c, f, l) != t.Pid() {
				continue
			}
			fd := t.FdOf(f.ID)
			if fd < 0 {
				return fmt.Errorf("image is inconsistent: pid %d takes %s on file %d, which it does not hold", t.Pid(), lockWords(l), f.ID)
			}
			if err := takeLock(t, fd, l); err != nil {
				return fmt.Errorf("fd %d (%s): take %s again: %w", fd, f.Ident.Path, lockWords(l), err)
			}
		}
	}
	return nil
}

// takeLock takes l on fd of the task.
func takeLock(t Task, fd int, l image.FileLock) error {
	if l.Kind == image.LockFlock {
		op := uintptr(unix.LOCK_SH)
		if l.Type == "write" {
			op = unix.LOCK_EX
		}
		_, err := t.Sys(unix.SYS_FLOCK, uintptr(fd), op|unix.LOCK_NB)
		if errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("another process holds a conflicting lock on the file now: %w", err)
		}
		return err
	}
	fl := flockOf(l)
	addr, err := t.Put(unsafe.Slice((*byte)(unsafe.Pointer(&fl)), unsafe.Sizeof(fl)))
	if err != nil {
		return err
	}
	cmd := uintptr(unix.F_SETLK)
	if l.Kind == image.LockOFD {
		cmd = unix.F_OFD_SETLK
	}
	_, err = t.Sys(unix.SYS_FCNTL, uintptr(fd), cmd, addr)
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
		return fmt.Errorf("%s holds a conflicting lock on it now: %w", conflicting(t.Pid(), fd, l), err)
	}
	return err
}

// flockOf is the struct flock of a POSIX or OFD lock (whence SEEK_SET; an
// l_len of 0 reaches the end of the file, however long it grows).
func flockOf(l image.FileLock) unix.Flock_t {
	fl := unix.Flock_t{Type: unix.F_RDLCK, Whence: 0, Start: l.Start}
	if l.Type == "write" {
		fl.Type = unix.F_WRLCK
	}
	if l.End >= 0 {
		fl.Len = l.End - l.Start + 1
	}
	return fl
}

// conflicting names who holds a lock in the way of l, asking the kernel
// through the task's fd (seen from cr: /proc/PID/fd/FD): "pid 4242", or
// "another process".
func conflicting(pid, fd int, l image.FileLock) string {
	tfd, err := unix.Open(fmt.Sprintf("/proc/%d/fd/%d", pid, fd), unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return "another process"
	}
	defer unix.Close(tfd)
	fl := flockOf(l)
	if err := unix.FcntlFlock(uintptr(tfd), unix.F_GETLK, &fl); err != nil || fl.Type == unix.F_UNLCK || fl.Pid <= 0 {
		return "another process"
	}
	return fmt.Sprintf("pid %d", fl.Pid)
}

// lockWords names a lock: "the POSIX (fcntl) write lock on bytes 10-29",
// "the exclusive flock lock on the whole file".
func lockWords(l image.FileLock) string {
	kind := map[string]string{image.LockPOSIX: "POSIX (fcntl)", image.LockOFD: "OFD", image.LockFlock: "flock"}[l.Kind]
	rng := "the whole file"
	if l.Start != 0 || l.End != -1 {
		end := "EOF"
		if l.End >= 0 {
			end = strconv.FormatInt(l.End, 10)
		}
		rng = fmt.Sprintf("bytes %d-%s", l.Start, end)
	}
	if l.Kind == image.LockFlock {
		return fmt.Sprintf("the %s flock lock on %s", flockMode(l.Type), rng)
	}
	return fmt.Sprintf("the %s %s lock on %s", kind, l.Type, rng)
}
