package restore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"

	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// setRlimits sets every resource limit from cr (prlimit on the task). A hard
// limit above ours cannot be raised without CAP_SYS_RESOURCE: then the soft
// limit is kept within our hard limit, and -v says so.
func (r *restorer) setRlimits() error {
	pid := r.task.Pid
	for _, l := range r.proc.Task.Rlimits {
		want := unix.Rlimit{Cur: l.Cur, Max: l.Max}
		err := unix.Prlimit(pid, l.Resource, &want, nil)
		if errors.Is(err, unix.EPERM) {
			var cur unix.Rlimit
			if err = unix.Prlimit(pid, l.Resource, nil, &cur); err == nil {
				want.Max = cur.Max
				want.Cur = min(want.Cur, cur.Max)
				r.logf("note: cannot raise the hard %s limit to %d without CAP_SYS_RESOURCE; kept %d", l.Name, l.Max, cur.Max)
				err = unix.Prlimit(pid, l.Resource, &want, nil)
			}
		}
		if err != nil {
			return fmt.Errorf("set %s limit: %w", l.Name, err)
		}
	}
	return nil
}

// restoreFiles closes the stub's fds and reopens every file of the image at
// its fd number, with its flags and offset; fds that shared an open file
// description share one again.
func (r *restorer) restoreFiles() error {
	if _, err := r.sys(unix.SYS_CLOSE_RANGE, 0, ^uintptr(0)>>32, 0); err != nil {
		return fmt.Errorf("close stub fds: %w", err)
	}
	files := map[int]*image.File{}
	for i := range r.ck.Files {
		files[r.ck.Files[i].ID] = &r.ck.Files[i]
	}
	fds := append([]image.Fd(nil), r.proc.Fds...)
	sort.Slice(fds, func(i, j int) bool { return fds[i].Fd < fds[j].Fd })
	opened := map[int]int{} // file id -> first fd holding it
	for _, e := range fds {
		f := files[e.FileID]
		cloexec := 0
		if e.Cloexec {
			cloexec = unix.O_CLOEXEC
		}
		if first, ok := opened[e.FileID]; ok {
			if _, err := r.sys(unix.SYS_DUP3, uintptr(first), uintptr(e.Fd), uintptr(cloexec)); err != nil {
				return fmt.Errorf("fd %d: dup of fd %d: %w", e.Fd, first, err)
			}
			continue
		}
		flags := int(f.Flags) &^ (unix.O_CREAT | unix.O_EXCL | unix.O_TRUNC | unix.O_NOCTTY)
		path := f.Ident.Path
		if f.Type == image.FileTTY {
			path = r.tty // a shell job gets cr's terminal
		}
		fd, err := r.openInTask(path, flags|unix.O_NOCTTY|cloexec)
		if err != nil {
			return fmt.Errorf("fd %d: %w", e.Fd, err)
		}
		if fd != e.Fd {
			// Lower fd numbers are all in place, so fd < e.Fd and e.Fd is free.
			if _, err := r.sys(unix.SYS_DUP3, uintptr(fd), uintptr(e.Fd), uintptr(cloexec)); err != nil {
				return fmt.Errorf("fd %d: %w", e.Fd, err)
			}
			r.sys(unix.SYS_CLOSE, uintptr(fd))
		}
		if f.Type == image.FileReg && f.Pos != 0 {
			if _, err := r.sys(unix.SYS_LSEEK, uintptr(e.Fd), uintptr(f.Pos), unix.SEEK_SET); err != nil {
				return fmt.Errorf("fd %d: seek %s to %d: %w", e.Fd, f.Ident.Path, f.Pos, err)
			}
		}
		opened[e.FileID] = e.Fd
	}
	// cwd, then root (paths are resolved against cr's root until then).
	p, err := r.putString(0, r.proc.FS.Cwd.Path)
	if err != nil {
		return err
	}
	if _, err := r.sys(unix.SYS_CHDIR, p); err != nil {
		return fmt.Errorf("chdir %s: %w", r.proc.FS.Cwd.Path, err)
	}
	if root := r.proc.FS.Root.Path; root != "/" {
		if p, err = r.putString(0, root); err != nil {
			return err
		}
		if _, err := r.sys(unix.SYS_CHROOT, p); err != nil {
			return fmt.Errorf("chroot %s: %w", root, err)
		}
	}
	return nil
}

// restoreMM sets the mm layout, auxv and exe link (PR_SET_MM_MAP).
func (r *restorer) restoreMM() error {
	mm := &r.proc.MM
	exe, err := r.openInTask(mm.Exe.Path, unix.O_RDONLY|unix.O_CLOEXEC)
	if err != nil {
		return fmt.Errorf("executable: %w", err)
	}
	defer r.sys(unix.SYS_CLOSE, uintptr(exe))
	auxv := make([]byte, 0, len(mm.Auxv)*8)
	for _, w := range mm.Auxv {
		auxv = binary.LittleEndian.AppendUint64(auxv, w)
	}
	auxvAddr, err := r.put(1024, auxv)
	if err != nil {
		return err
	}
	// struct prctl_mm_map (include/uapi/linux/prctl.h).
	m := make([]byte, 0, 104)
	for _, w := range []uint64{mm.StartCode, mm.EndCode, mm.StartData, mm.EndData, mm.StartBrk, mm.Brk,
		mm.StartStack, mm.ArgStart, mm.ArgEnd, mm.EnvStart, mm.EnvEnd, uint64(auxvAddr)} {
		m = binary.LittleEndian.AppendUint64(m, w)
	}
	m = binary.LittleEndian.AppendUint32(m, uint32(len(auxv)))
	m = binary.LittleEndian.AppendUint32(m, uint32(exe))
	addr, err := r.put(0, m)
	if err != nil {
		return err
	}
	if _, err := r.sys(unix.SYS_PRCTL, unix.PR_SET_MM, unix.PR_SET_MM_MAP, addr, uintptr(len(m)), 0); err != nil {
		return fmt.Errorf("set mm layout and exe (PR_SET_MM_MAP): %w", err)
	}
	return nil
}

// restoreTask sets comm, umask, signal handlers, session, rseq, the
// clear_child_tid pointer and, last, credentials.
func (r *restorer) restoreTask() error {
	t := &r.proc.Task
	th := &r.proc.Threads[0]
	p, err := r.putString(0, t.Comm)
	if err != nil {
		return err
	}
	if _, err := r.sys(unix.SYS_PRCTL, unix.PR_SET_NAME, p); err != nil {
		return fmt.Errorf("set comm: %w", err)
	}
	if _, err := r.sys(unix.SYS_UMASK, uintptr(t.Umask)); err != nil {
		return fmt.Errorf("umask: %w", err)
	}
	for _, sa := range t.Sigactions {
		if sa.Handler == 0 && sa.Flags == 0 && sa.Mask == 0 {
			continue // SIG_DFL, as in a new process
		}
		b := make([]byte, 0, 32)
		for _, w := range []uint64{sa.Handler, sa.Flags, sa.Restorer, sa.Mask} {
			b = binary.LittleEndian.AppendUint64(b, w)
		}
		addr, err := r.put(0, b)
		if err != nil {
			return err
		}
		if _, err := r.sys(unix.SYS_RT_SIGACTION, uintptr(sa.Sig), addr, 0, 8); err != nil {
			return fmt.Errorf("restore handler of signal %d: %w", sa.Sig, err)
		}
	}
	if t.Sid == t.Pid && !r.opt.ShellJob {
		if _, err := r.sys(unix.SYS_SETSID); err != nil {
			return fmt.Errorf("setsid: %w", err)
		}
	}
	if th.Rseq != nil {
		if _, err := r.sys(unix.SYS_RSEQ, uintptr(th.Rseq.Ptr), uintptr(th.Rseq.Size), 0, uintptr(th.Rseq.Signature)); err != nil {
			return fmt.Errorf("register rseq at %#x: %w", th.Rseq.Ptr, err)
		}
	}
	if _, err := r.sys(unix.SYS_SET_TID_ADDRESS, uintptr(th.ClearChildTid)); err != nil {
		return fmt.Errorf("set_tid_address: %w", err)
	}
	for _, step := range []func() error{
		r.restoreMisc, r.restoreTimers, r.restoreSignalState, r.restoreSeccomp, r.restoreCreds, r.restoreLate,
	} {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

// finish removes the trampoline (the last injected syscall runs from it
// and unmaps it) and loads the final registers, XSAVE state and mask.
func (r *restorer) finish() error {
	th := &r.proc.Threads[0]
	if sc := r.proc.Task.Seccomp; sc != nil && sc.Mode == 1 {
		if _, err := r.sys(unix.SYS_PRCTL, unix.PR_SET_SECCOMP, 1); err != nil {
			return fmt.Errorf("seccomp strict mode: %w", err)
		}
	}
	if _, err := r.sys(unix.SYS_MUNMAP, r.tramp, trampSize); err != nil {
		return fmt.Errorf("unmap trampoline: %w", err)
	}
	regs := th.Regs.Ptrace()
	if err := r.task.SetRegs(&regs); err != nil {
		return err
	}
	if err := r.task.SetXState(th.XSave); err != nil {
		return fmt.Errorf("set xsave state (%d bytes): %w", len(th.XSave), err)
	}
	return r.task.SetSigmask(th.Sigmask)
}
