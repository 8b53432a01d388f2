package restore

import (
	"encoding/binary"
	"fmt"

	"github.com/cr-tools/cr/pkg/files"
	"golang.org/x/sys/unix"
)

// Controlling terminals and job control (files/pty.go has the pairs). A
// session leader whose controlling terminal was a pty slave of the tree
// takes it right after its setsid, before it forks anything (takeCtty), so
// that every other process of its session, forked from it or below it,
// inherits it at fork as it did originally (a controlling terminal is
// copied at fork; only a session leader can acquire one, TIOCSCTTY). Once
// every process group exists, the leader sets the terminal's foreground
// group (setForeground, TIOCSPGRP). Stopped jobs are restored stopped
// (run detaches them with SIGSTOP); with the foreground group back, a
// background job that reads the terminal stops with SIGTTIN as before.

// takeCtty makes the pty slave that was the controlling terminal of r's
// session (if the tree held its master) r's controlling terminal; r has
// just become the session's leader. The slave stays open in r until its
// files are restored (restoreFiles closes the stub's fds), so that the
// pair's slave side is not closed by all meanwhile.
func (r *restorer) takeCtty() error {
	tk := &r.proc.Task
	if tk.Sid != tk.Pid || tk.Zombie || r.opt.ShellJob && tk.Sid == r.ck.Processes[0].Task.Sid {
		return nil
	}
	path, _, err := files.Ctty(r.t.open, tk.Sid)
	if err != nil || path == "" {
		return err
	}
	fd, err := r.openInTask(path, unix.O_RDWR|unix.O_NOCTTY)
	if err != nil {
		return fmt.Errorf("controlling terminal %s: %w", path, err)
	}
	if _, err := r.sys(unix.SYS_IOCTL, uintptr(fd), unix.TIOCSCTTY, 0); err != nil {
		return fmt.Errorf("make %s the controlling terminal (TIOCSCTTY): %w", path, err)
	}
	r.logf("pid %d: controlling terminal %s", tk.Pid, path)
	return nil
}

// setForeground gives each restored controlling terminal its foreground
// process group, from its session leader (TIOCSPGRP needs a caller whose
// controlling terminal it is). A group no process of the image is in any
// more cannot be made again: the leader's group stays in the foreground,
// and -v says so.
func (t *treeRestore) setForeground() error {
	groups := map[int]bool{}
	for _, p := range t.ck.Processes {
		if !p.Task.Zombie {
			groups[p.Task.Pgid] = true
		}
	}
	for _, r := range t.procs {
		tk := &r.proc.Task
		if tk.Sid != tk.Pid || tk.Zombie || t.opt.ShellJob && tk.Sid == t.ck.Processes[0].Task.Sid {
			continue
		}
		path, fg, err := files.Ctty(t.open, tk.Sid)
		if err != nil {
			return err
		}
		if path == "" || fg == 0 || fg == tk.Pgid {
			continue
		}
		if !groups[fg] {
			t.logf("warning: %s: its foreground process group %d had no live process at the dump: session %d's leader's group %d is in the foreground instead", path, fg, tk.Sid, tk.Pgid)
			continue
		}
		fd, err := r.openInTask(path, unix.O_RDWR|unix.O_NOCTTY)
		if err != nil {
			return fmt.Errorf("pid %d: %s: %w", tk.Pid, path, err)
		}
		b := make([]byte, 4)
		binary.LittleEndian.PutUint32(b, uint32(fg))
		addr, err := r.put(0, b)
		if err != nil {
			return err
		}
		_, err = r.sys(unix.SYS_IOCTL, uintptr(fd), unix.TIOCSPGRP, addr)
		r.sys(unix.SYS_CLOSE, uintptr(fd))
		if err != nil {
			return fmt.Errorf("pid %d: foreground process group %d of %s (TIOCSPGRP): %w", tk.Pid, fg, path, err)
		}
		t.logf("%s: foreground process group %d", path, fg)
	}
	return nil
}
