package restore

import (
	"encoding/binary"
	"errors"
	"fmt"

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

// restoreFiles closes the stub's fds and rebuilds the fd table: every open
// file description is created once (files reopened with their flags and
// offset, pipes with their contents, eventfds, epoll instances) at a
// temporary high fd, then dup3'ed to each of its fd numbers, so that fds
// that shared a description share one again; epoll interest lists are
// filled last, when every watched fd is in place.
func (r *restorer) restoreFiles() error {
	if _, err := r.sys(unix.SYS_CLOSE_RANGE, 0, ^uintptr(0)>>32, 0); err != nil {
		return fmt.Errorf("close stub fds: %w", err)
	}
	maxFd := 0
	for _, e := range r.proc.Fds {
		maxFd = max(maxFd, e.Fd)
	}
	// Temporary fds live above every fd of the image; lift the soft fd
	// limit meanwhile (the image's own limit was set already).
	pid := r.task.Pid
	var nofile unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &nofile); err != nil {
		return err
	}
	base := maxFd + 1
	if need := uint64(base + len(r.ck.Files) + 8); nofile.Cur < need {
		if nofile.Max < need {
			return fmt.Errorf("fd %d is above the fd limit (%d) cr can give the process", maxFd, nofile.Max)
		}
		lifted := unix.Rlimit{Cur: nofile.Max, Max: nofile.Max}
		if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &lifted, nil); err != nil {
			return err
		}
		defer unix.Prlimit(pid, unix.RLIMIT_NOFILE, &nofile, nil)
	}
	used := map[int]bool{}
	for _, e := range r.proc.Fds {
		used[e.FileID] = true
	}
	temp := map[int]int{} // file id -> temporary fd
	pipes := map[uint64][2]int{}
	hold := func(fd int) (int, error) {
		// Move a new fd above the image's fds.
		hi, err := r.sys(unix.SYS_FCNTL, uintptr(fd), unix.F_DUPFD_CLOEXEC, uintptr(base))
		if err != nil {
			return 0, err
		}
		r.sys(unix.SYS_CLOSE, uintptr(fd))
		return int(hi), nil
	}
	for i := range r.ck.Files {
		f := &r.ck.Files[i]
		if !used[f.ID] {
			continue
		}
		fd, err := r.createFile(f, pipes, hold)
		if err != nil {
			return fmt.Errorf("fd %d: %w", r.fdOf(f.ID), err)
		}
		temp[f.ID] = fd
	}
	for _, e := range r.proc.Fds {
		cloexec := uintptr(0)
		if e.Cloexec {
			cloexec = unix.O_CLOEXEC
		}
		if _, err := r.sys(unix.SYS_DUP3, uintptr(temp[e.FileID]), uintptr(e.Fd), cloexec); err != nil {
			return fmt.Errorf("fd %d: %w", e.Fd, err)
		}
	}
	if _, err := r.sys(unix.SYS_CLOSE_RANGE, uintptr(base), ^uintptr(0)>>32, 0); err != nil {
		return fmt.Errorf("close temporary fds: %w", err)
	}
	for i := range r.ck.Files {
		f := &r.ck.Files[i]
		if f.Type != image.FileEpoll || !used[f.ID] {
			continue
		}
		epfd := r.fdOf(f.ID)
		for _, t := range f.Epoll {
			// struct epoll_event is packed on x86-64: u32 events, u64 data.
			ev := make([]byte, 12)
			binary.LittleEndian.PutUint32(ev, t.Events)
			binary.LittleEndian.PutUint64(ev[4:], t.Data)
			addr, err := r.put(0, ev)
			if err != nil {
				return err
			}
			if _, err := r.sys(unix.SYS_EPOLL_CTL, uintptr(epfd), unix.EPOLL_CTL_ADD, uintptr(t.Fd), addr); err != nil {
				return fmt.Errorf("fd %d: watch fd %d with epoll: %w", epfd, t.Fd, err)
			}
		}
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

// fdOf returns an fd number that holds file id in the image.
func (r *restorer) fdOf(id int) int {
	for _, e := range r.proc.Fds {
		if e.FileID == id {
			return e.Fd
		}
	}
	return -1
}

// createFile makes one open file description in the task, held at a
// temporary high fd (by hold), and returns that fd.
func (r *restorer) createFile(f *image.File, pipes map[uint64][2]int, hold func(int) (int, error)) (int, error) {
	switch f.Type {
	case image.FilePipe:
		ends, ok := pipes[f.Pipe.ID]
		if !ok {
			fds := make([]byte, 8)
			addr, err := r.put(0, fds)
			if err != nil {
				return 0, err
			}
			if _, err := r.sys(unix.SYS_PIPE2, addr, unix.O_CLOEXEC); err != nil {
				return 0, fmt.Errorf("pipe2: %w", err)
			}
			if _, err := r.mem.ReadAt(fds, int64(addr)); err != nil {
				return 0, err
			}
			for i := range 2 {
				if ends[i], err = hold(int(binary.LittleEndian.Uint32(fds[4*i:]))); err != nil {
					return 0, err
				}
			}
			if f.Pipe.Size > 0 {
				if _, err := r.sys(unix.SYS_FCNTL, uintptr(ends[0]), unix.F_SETPIPE_SZ, uintptr(f.Pipe.Size)); err != nil {
					return 0, fmt.Errorf("pipe size %d: %w", f.Pipe.Size, err)
				}
			}
			pipes[f.Pipe.ID] = ends
		}
		fd := ends[0]
		if f.Flags&unix.O_ACCMODE == unix.O_WRONLY {
			fd = ends[1]
		}
		if len(f.Pipe.Data) > 0 {
			if err := r.fillPipe(ends[1], f.Pipe.Data); err != nil {
				return 0, err
			}
		}
		return fd, r.setFlags(fd, f.Flags)
	case image.FileEventfd:
		flags := uintptr(unix.EFD_CLOEXEC)
		if f.Eventfd.Semaphore {
			flags |= unix.EFD_SEMAPHORE
		}
		fd, err := r.sys(unix.SYS_EVENTFD2, 0, flags)
		if err != nil {
			return 0, fmt.Errorf("eventfd2: %w", err)
		}
		hi, err := hold(int(fd))
		if err != nil {
			return 0, err
		}
		if f.Eventfd.Count > 0 {
			addr, err := r.put(0, le64(f.Eventfd.Count))
			if err != nil {
				return 0, err
			}
			if _, err := r.sys(unix.SYS_WRITE, uintptr(hi), addr, 8); err != nil {
				return 0, fmt.Errorf("set eventfd counter: %w", err)
			}
		}
		return hi, r.setFlags(hi, f.Flags)
	case image.FileEpoll:
		fd, err := r.sys(unix.SYS_EPOLL_CREATE1, unix.EPOLL_CLOEXEC)
		if err != nil {
			return 0, fmt.Errorf("epoll_create1: %w", err)
		}
		return hold(int(fd))
	}
	flags := int(f.Flags) &^ (unix.O_CREAT | unix.O_EXCL | unix.O_TRUNC | unix.O_NOCTTY)
	path := f.Ident.Path
	if f.Type == image.FileTTY {
		path = r.tty // a shell job gets cr's terminal
	}
	fd, err := r.openInTask(path, flags|unix.O_NOCTTY|unix.O_CLOEXEC)
	if err != nil {
		return 0, err
	}
	hi, err := hold(fd)
	if err != nil {
		return 0, err
	}
	if f.Type == image.FileReg && f.Pos != 0 {
		if _, err := r.sys(unix.SYS_LSEEK, uintptr(hi), uintptr(f.Pos), unix.SEEK_SET); err != nil {
			return 0, fmt.Errorf("seek %s to %d: %w", f.Ident.Path, f.Pos, err)
		}
	}
	return hi, nil
}

// setFlags sets the status flags (O_NONBLOCK, ...) of a created file.
func (r *restorer) setFlags(fd int, flags uint32) error {
	if _, err := r.sys(unix.SYS_FCNTL, uintptr(fd), unix.F_SETFL, uintptr(flags)); err != nil {
		return fmt.Errorf("set flags %#o: %w", flags, err)
	}
	return nil
}

// fillPipe writes the saved contents into a pipe, from cr (the task's write
// end is copied over with pidfd_getfd).
func (r *restorer) fillPipe(wfd int, data []byte) error {
	pidfd, err := unix.PidfdOpen(r.task.Pid, 0)
	if err != nil {
		return err
	}
	defer unix.Close(pidfd)
	w, err := unix.PidfdGetfd(pidfd, wfd, 0)
	if err != nil {
		return fmt.Errorf("pidfd_getfd: %w", err)
	}
	defer unix.Close(w)
	for len(data) > 0 {
		n, err := unix.Write(w, data)
		if err != nil {
			return fmt.Errorf("fill pipe: %w", err)
		}
		data = data[n:]
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

// restoreTask sets the process-wide state from the main thread (umask,
// signal handlers, session, personality, timers, the shared signal queue),
// then each thread's own state, and last, in every thread, seccomp and
// credentials.
func (r *restorer) restoreTask() error {
	t := &r.proc.Task
	if _, err := r.sys(unix.SYS_UMASK, uintptr(t.Umask)); err != nil {
		return fmt.Errorf("umask: %w", err)
	}
	for _, sa := range t.Sigactions {
		if sa.Handler == 0 && sa.Flags == 0 && sa.Mask == 0 {
			continue // SIG_DFL, as in a new process
		}
		addr, err := r.put(0, le64(sa.Handler, sa.Flags, sa.Restorer, sa.Mask))
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
	for _, step := range []func() error{r.restoreMisc, r.restoreTimers, r.restoreSharedSignals} {
		if err := step(); err != nil {
			return err
		}
	}
	for i, th := range r.threads {
		img := &r.proc.Threads[i]
		if err := r.onThread(th, func() error { return r.restoreThread(img) }); err != nil {
			return fmt.Errorf("thread %d: %w", img.Tid, err)
		}
	}
	for i, th := range r.threads {
		if err := r.onThread(th, func() error {
			for _, step := range []func() error{r.restoreSeccomp, r.restoreCreds, r.restoreLate} {
				if err := step(); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("thread %d: %w", r.proc.Threads[i].Tid, err)
		}
	}
	return nil
}

// onThread runs f with syscalls injected into thread th.
func (r *restorer) onThread(th *rthread, f func() error) error {
	saved := r.in
	r.in = th.in
	defer func() { r.in = saved }()
	return f()
}

// restoreThread sets one thread's own state: name, rseq, clear_child_tid,
// robust list, alternate stack, timer slack and its signal queue.
func (r *restorer) restoreThread(th *image.Thread) error {
	name := th.Name
	if name == "" {
		name = r.proc.Task.Comm
	}
	p, err := r.putString(0, name)
	if err != nil {
		return err
	}
	if _, err := r.sys(unix.SYS_PRCTL, unix.PR_SET_NAME, p); err != nil {
		return fmt.Errorf("set name: %w", err)
	}
	if th.Rseq != nil {
		if _, err := r.sys(unix.SYS_RSEQ, uintptr(th.Rseq.Ptr), uintptr(th.Rseq.Size), 0, uintptr(th.Rseq.Signature)); err != nil {
			return fmt.Errorf("register rseq at %#x: %w", th.Rseq.Ptr, err)
		}
	}
	if _, err := r.sys(unix.SYS_SET_TID_ADDRESS, uintptr(th.ClearChildTid)); err != nil {
		return fmt.Errorf("set_tid_address: %w", err)
	}
	if th.RobustList != 0 {
		if _, err := r.sys(sysSetRobustList, uintptr(th.RobustList), uintptr(th.RobustListLen)); err != nil {
			return fmt.Errorf("set_robust_list: %w", err)
		}
	}
	if ts := r.proc.Task.Sched.TimerSlackNs; ts != 0 {
		if _, err := r.sys(unix.SYS_PRCTL, unix.PR_SET_TIMERSLACK, uintptr(ts)); err != nil {
			return fmt.Errorf("timer slack: %w", err)
		}
	}
	return r.restoreThreadSignals(th)
}

// finish removes the trampoline (the last injected syscall runs from it
// and unmaps it) and loads every thread's registers, XSAVE state and mask.
func (r *restorer) finish() error {
	if sc := r.proc.Task.Seccomp; sc != nil && sc.Mode == 1 {
		for _, th := range r.threads {
			if err := r.onThread(th, func() error {
				_, err := r.sys(unix.SYS_PRCTL, unix.PR_SET_SECCOMP, 1)
				return err
			}); err != nil {
				return fmt.Errorf("seccomp strict mode: %w", err)
			}
		}
	}
	if _, err := r.sys(unix.SYS_MUNMAP, r.tramp, trampSize); err != nil {
		return fmt.Errorf("unmap trampoline: %w", err)
	}
	for i, th := range r.threads {
		img := &r.proc.Threads[i]
		regs := img.Regs.Ptrace()
		if err := th.task.SetRegs(&regs); err != nil {
			return err
		}
		if err := th.task.SetXState(img.XSave); err != nil {
			return fmt.Errorf("set xsave state of thread %d (%d bytes): %w", img.Tid, len(img.XSave), err)
		}
		if err := th.task.SetSigmask(img.Sigmask); err != nil {
			return err
		}
	}
	return nil
}
