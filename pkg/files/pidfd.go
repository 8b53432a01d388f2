package files

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// pidfd: a pidfd_open(2) (or clone(CLONE_PIDFD)) descriptor
// ("anon_inode:[pidfd]"), record image.Pidfd. Dumped from its fdinfo
// ("Pid:", "NSpid:", kernel/pid.c pidfd_show_fdinfo; -1 once the process
// has been reaped) and its flags (O_NONBLOCK, and O_EXCL which is
// PIDFD_THREAD). The process must be one of the dumped tree (its pid is the
// same after restore); a pidfd of a thread must name a main thread. Made
// again with pidfd_open(2) of the restored pid, which exists by the time
// fds are installed (every process is forked before any gets its fds). A
// pidfd of a reaped process is made as one of a short-lived process of
// cr's (/bin/true, run and reaped): it reports the exit (poll: readable)
// as the original did, and names no pid.
type pidfd struct{}

// pidfdThread is PIDFD_THREAD (include/uapi/linux/pidfd.h): O_EXCL.
const pidfdThread = unix.O_EXCL

func (pidfd) Type() string { return image.FilePidfd }

func (pidfd) Recognize(p *Probe) bool { return p.Target == "anon_inode:[pidfd]" }

func (pidfd) Dump(p *Probe, f *image.File) error {
	pid, ok := 0, false
	for _, line := range strings.Split(p.Info, "\n") {
		if v, found := strings.CutPrefix(line, "Pid:"); found {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				return fmt.Errorf("fd %d: pidfd Pid %q: %w", p.Fd, v, err)
			}
			pid, ok = n, true
		}
	}
	if !ok {
		return fmt.Errorf("fd %d: a pidfd without a Pid line in its fdinfo", p.Fd)
	}
	if pid == 0 {
		// fdinfo says 0 for a process of another pid namespace.
		return &UnsupportedError{Fd: p.Fd, What: "a pidfd of a process of another pid namespace"}
	}
	f.Pidfd = &image.Pidfd{Pid: pid, Thread: p.Flags&pidfdThread != 0, Exited: pid < 0}
	if pid < 0 {
		f.Pidfd.Pid = 0
	}
	return nil
}

// Resolve refuses a pidfd of a process outside the tree, and one of a
// thread other than a main thread.
func (pidfd) Resolve(c *Collector, fs []*image.File) error {
	for _, f := range fs {
		if f.Pidfd.Exited {
			continue
		}
		pid, fd := c.Owner(f.ID)
		target := f.Pidfd.Pid
		if _, ok := c.procs[target]; ok {
			continue
		}
		what := fmt.Sprintf("a pidfd of pid %d, a process outside the dumped tree", target)
		if f.Pidfd.Thread {
			for p := range c.procs {
				if _, err := os.Stat(fmt.Sprintf("/proc/%d/task/%d", p, target)); err == nil {
					what = fmt.Sprintf("a pidfd of thread %d of pid %d (PIDFD_THREAD), which cr does not restore yet: only a main thread's", target, p)
				}
			}
		}
		c.Refuse(&UnsupportedError{Pid: pid, Fd: fd, What: what})
	}
	return nil
}

func (pidfd) Validate(c *image.Checkpoint, f *image.File) error {
	if err := need(f.Pidfd != nil, f, "process"); err != nil {
		return err
	}
	if f.Pidfd.Exited {
		return nil
	}
	for _, p := range c.Processes {
		if p.Task.Pid == f.Pidfd.Pid {
			return nil
		}
	}
	return fmt.Errorf("pidfd of pid %d, which is not a process of the image", f.Pidfd.Pid)
}

func (pidfd) Open(_ *Opener, f *image.File) (int, error) {
	flags := int(f.Flags) & (unix.O_NONBLOCK | pidfdThread)
	if f.Pidfd.Exited {
		return exitedPidfd(flags)
	}
	fd, err := unix.PidfdOpen(f.Pidfd.Pid, flags)
	if err != nil {
		return 0, fmt.Errorf("pidfd_open pid %d: %w", f.Pidfd.Pid, err)
	}
	return fd, nil
}

// exitedPidfd returns a pidfd of a process that has exited and been reaped.
func exitedPidfd(flags int) (int, error) {
	cmd := exec.Command("/bin/true")
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("pidfd of an exited process: %w", err)
	}
	fd, err := unix.PidfdOpen(cmd.Process.Pid, flags&^pidfdThread)
	cmd.Wait()
	if err != nil {
		return 0, fmt.Errorf("pidfd of an exited process: %w", err)
	}
	return fd, nil
}

func (pidfd) Describe(f *image.File) string {
	switch {
	case f.Pidfd == nil:
		return "pidfd"
	case f.Pidfd.Exited:
		return "pidfd of a process that has exited"
	case f.Pidfd.Thread:
		return fmt.Sprintf("pidfd of thread %d", f.Pidfd.Pid)
	}
	return fmt.Sprintf("pidfd of pid %d", f.Pidfd.Pid)
}
