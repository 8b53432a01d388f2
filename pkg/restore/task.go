package restore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

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
	// Keep the fd transport above the image's fds, close everything else
	// the stub left.
	tr, err := r.sys(unix.SYS_FCNTL, uintptr(r.transport), unix.F_DUPFD_CLOEXEC, uintptr(base))
	if err != nil {
		return fmt.Errorf("move the fd transport: %w", err)
	}
	r.transport = int(tr)
	if _, err := r.sys(unix.SYS_CLOSE_RANGE, 0, uintptr(base-1), 0); err != nil {
		return fmt.Errorf("close stub fds: %w", err)
	}
	used := map[int]bool{}
	for _, e := range r.proc.Fds {
		used[e.FileID] = true
	}
	temp := map[int]int{} // file id -> temporary fd
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
		fd, err := r.installFile(f, hold)
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
		if f.Type != image.FileEpoll || !used[f.ID] || r.t.files[f.ID] != 0 {
			continue // not here, or registered by the process that created it
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
		// Other processes that share this epoll instance get it from cr.
		if fd, err := r.grab(epfd); err != nil {
			return err
		} else {
			r.t.files[f.ID] = fd
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

// installFile puts one open file description into the task, held at a
// temporary high fd (by hold), and returns that fd. cr makes each
// description once (open, pipe2, eventfd) and sends it to every process that
// has it, over the fd transport, so processes that shared a description
// share it again; epoll instances are made in the first process that has
// them, where their interest list is filled.
func (r *restorer) installFile(f *image.File, hold func(int) (int, error)) (int, error) {
	if f.Type == image.FileEpoll && r.t.files[f.ID] == 0 {
		fd, err := r.sys(unix.SYS_EPOLL_CREATE1, unix.EPOLL_CLOEXEC)
		if err != nil {
			return 0, fmt.Errorf("epoll_create1: %w", err)
		}
		return hold(int(fd))
	}
	crfd, err := r.t.crFile(f)
	if err != nil {
		return 0, err
	}
	fd, err := r.receive(crfd)
	if err != nil {
		return 0, err
	}
	return hold(fd)
}

// crFile returns cr's own fd of the open file description f, making it the
// first time.
func (t *treeRestore) crFile(f *image.File) (int, error) {
	if fd, ok := t.files[f.ID]; ok {
		return fd, nil
	}
	var fd int
	var err error
	switch f.Type {
	case image.FilePipe:
		ends, ok := t.pipes[f.Pipe.ID]
		if !ok {
			var p [2]int
			if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
				return 0, fmt.Errorf("pipe2: %w", err)
			}
			ends = p
			t.pipes[f.Pipe.ID] = ends
			if f.Pipe.Size > 0 {
				if _, err := unix.FcntlInt(uintptr(p[0]), unix.F_SETPIPE_SZ, f.Pipe.Size); err != nil {
					return 0, fmt.Errorf("pipe size %d: %w", f.Pipe.Size, err)
				}
			}
		}
		fd = ends[0]
		if f.Flags&unix.O_ACCMODE == unix.O_WRONLY {
			fd = ends[1]
		}
		if data := f.Pipe.Data; len(data) > 0 {
			for len(data) > 0 {
				n, err := unix.Write(ends[1], data)
				if err != nil {
					return 0, fmt.Errorf("fill pipe: %w", err)
				}
				data = data[n:]
			}
		}
		// The pipe's fds belong to t.pipes; t.files gets a dup.
		if fd, err = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0); err != nil {
			return 0, err
		}
		err = setFlags(fd, f.Flags)
	case image.FileEventfd:
		flags := unix.EFD_CLOEXEC
		if f.Eventfd.Semaphore {
			flags |= unix.EFD_SEMAPHORE
		}
		if fd, err = unix.Eventfd(0, flags); err != nil {
			return 0, fmt.Errorf("eventfd: %w", err)
		}
		if f.Eventfd.Count > 0 {
			if _, err = unix.Write(fd, le64(f.Eventfd.Count)); err != nil {
				unix.Close(fd)
				return 0, fmt.Errorf("set eventfd counter: %w", err)
			}
		}
		err = setFlags(fd, f.Flags)
	case image.FileUnix:
		if fd, err = t.crSocket(f); err != nil {
			return 0, err
		}
		err = setFlags(fd, f.Flags)
	case image.FileMemfd:
		obj, err := t.crShmem(f.Shmem)
		if err != nil {
			return 0, err
		}
		// A description of its own: reopen the object through /proc.
		if fd, err = unix.Open(fmt.Sprintf("/proc/self/fd/%d", obj), int(f.Flags)&^(unix.O_CREAT|unix.O_EXCL|unix.O_TRUNC)|unix.O_CLOEXEC, 0); err != nil {
			return 0, fmt.Errorf("reopen memfd: %w", err)
		}
		if f.Pos != 0 {
			_, err = unix.Seek(fd, f.Pos, 0)
		}
	default:
		path := f.Ident.Path
		if f.Type == image.FileTTY {
			path = t.tty // a shell job gets cr's terminal
		}
		flags := int(f.Flags) &^ (unix.O_CREAT | unix.O_EXCL | unix.O_TRUNC | unix.O_NOCTTY)
		if fd, err = unix.Open(path, flags|unix.O_NOCTTY|unix.O_CLOEXEC, 0); err != nil {
			return 0, fmt.Errorf("open %s: %w", path, err)
		}
		if f.Type == image.FileReg && f.Pos != 0 {
			if _, err = unix.Seek(fd, f.Pos, 0); err != nil {
				err = fmt.Errorf("seek %s to %d: %w", path, f.Pos, err)
			}
		}
	}
	if err != nil {
		unix.Close(fd)
		return 0, err
	}
	t.files[f.ID] = fd
	return fd, nil
}

// crShmem returns cr's fd of a shared memory object, making it (with its
// contents) the first time: MAP_SHARED anonymous memory is made the way the
// process made it, so that /proc/PID/maps shows "/dev/zero (deleted)"
// again: cr maps it itself and keeps the object through map_files.
func (t *treeRestore) crShmem(id uint64) (int, error) {
	if fd, ok := t.shmem[id]; ok {
		return fd, nil
	}
	var sh *image.Shmem
	for i := range t.ck.Shmem {
		if t.ck.Shmem[i].ID == id {
			sh = &t.ck.Shmem[i]
		}
	}
	if sh == nil {
		return 0, fmt.Errorf("image is inconsistent: no shared memory object %d", id)
	}
	var fd int
	var err error
	switch sh.Kind {
	case image.ShmemMemfd:
		if fd, err = unix.MemfdCreate(sh.Name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING); err != nil {
			return 0, fmt.Errorf("memfd_create: %w", err)
		}
		if err = unix.Ftruncate(fd, sh.Size); err != nil {
			unix.Close(fd)
			return 0, err
		}
	default:
		size := max(int(sh.Size), pageSize)
		m, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
		if err != nil {
			return 0, fmt.Errorf("shared memory: %w", err)
		}
		start := uintptr(unsafe.Pointer(&m[0]))
		fd, err = unix.Open(fmt.Sprintf("/proc/self/map_files/%x-%x", start, start+uintptr(size)), unix.O_RDWR|unix.O_CLOEXEC, 0)
		unix.Munmap(m)
		if err != nil {
			return 0, fmt.Errorf("shared memory object: %w", err)
		}
	}
	t.shmem[id] = fd
	if len(sh.Runs) > 0 {
		src, err := image.OpenPagesNamed(t.opt.Dir, image.ShmemPagesFile)
		if err != nil {
			return 0, err
		}
		defer src.Close()
		buf := make([]byte, 1<<20)
		for _, r := range sh.Runs {
			for done := uint64(0); done < r.Pages*pageSize; {
				n := min(uint64(len(buf)), r.Pages*pageSize-done)
				if _, err := src.ReadAt(buf[:n], int64(r.Offset+done)); err != nil {
					return 0, err
				}
				// Never grow the object past its size with the last page.
				w := buf[:n]
				if end := int64(r.Addr + done + n); end > sh.Size {
					w = w[:max(0, int64(n)-(end-sh.Size))]
				}
				if _, err := unix.Pwrite(fd, w, int64(r.Addr+done)); err != nil {
					return 0, fmt.Errorf("fill shared memory: %w", err)
				}
				done += n
			}
		}
	}
	if sh.Seals != 0 {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, sh.Seals); err != nil {
			return 0, fmt.Errorf("memfd seals %#x: %w", sh.Seals, err)
		}
	}
	return fd, nil
}

// crSocket makes the socketpair of a unix socket of the image (the first
// of its two ends to come), queues the messages the socket had waiting (sent
// through its peer), and returns a new fd of this end.
func (t *treeRestore) crSocket(f *image.File) (int, error) {
	u := f.Unix
	if _, ok := t.socks[u.Ino]; !ok {
		sp, err := unix.Socketpair(unix.AF_UNIX, u.Type|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return 0, fmt.Errorf("socketpair: %w", err)
		}
		t.socks[u.Ino] = sp[0]
		if u.Peer != 0 {
			t.socks[u.Peer] = sp[1]
		} else {
			t.closedPeers[u.Ino] = sp[1] // the peer was closed: close it once the queue is in
		}
	}
	me := t.socks[u.Ino]
	peer, ok := t.socks[u.Peer]
	if u.Peer == 0 {
		peer, ok = t.closedPeers[u.Ino]
	}
	if len(u.Queue) > 0 {
		if !ok {
			return 0, fmt.Errorf("image is inconsistent: no peer for socket:[%d]", u.Ino)
		}
		for _, m := range u.Queue {
			if _, err := unix.Write(peer, m); err != nil {
				return 0, fmt.Errorf("queue %d bytes on socket:[%d]: %w", len(m), u.Ino, err)
			}
		}
	}
	if u.Shutdown != 0 {
		t.shutdowns = append(t.shutdowns, [2]int{me, u.Shutdown})
	}
	return unix.FcntlInt(uintptr(me), unix.F_DUPFD_CLOEXEC, 0)
}

// setFlags sets the status flags (O_NONBLOCK, ...) of an open file.
func setFlags(fd int, flags uint32) error {
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, int(flags)); err != nil {
		return fmt.Errorf("set flags %#o: %w", flags, err)
	}
	return nil
}

// receive sends cr's fd crfd to the task over the fd transport (SCM_RIGHTS)
// and returns the fd number it got there.
func (r *restorer) receive(crfd int) (int, error) {
	if err := unix.Sendmsg(r.t.crEnd, []byte{0}, unix.UnixRights(crfd), nil, 0); err != nil {
		return 0, fmt.Errorf("send fd to pid %d: %w", r.task.Pid, err)
	}
	// struct msghdr {name, namelen, iov, iovlen, control, controllen, flags},
	// one iovec of one byte, and room for one SCM_RIGHTS cmsg.
	const off = 3072
	base := r.scratch + off
	msg := le64(0, 0, uint64(base+64), 1, uint64(base+96), 24, 0)
	msg = append(msg, make([]byte, 64-len(msg))...)
	msg = append(msg, le64(uint64(base+80), 1)...)
	msg = append(msg, make([]byte, 96-len(msg)+24)...)
	addr, err := r.put(off, msg)
	if err != nil {
		return 0, err
	}
	if _, err := r.sys(unix.SYS_RECVMSG, uintptr(r.transport), addr, unix.MSG_CMSG_CLOEXEC); err != nil {
		return 0, fmt.Errorf("receive fd: %w", err)
	}
	ctl := make([]byte, 24)
	if _, err := r.mem.ReadAt(ctl, int64(base+96)); err != nil {
		return 0, err
	}
	if int32(binary.LittleEndian.Uint32(ctl[12:])) != unix.SCM_RIGHTS {
		return 0, fmt.Errorf("receive fd: no SCM_RIGHTS message")
	}
	return int(int32(binary.LittleEndian.Uint32(ctl[16:]))), nil
}

// grab copies the task's fd into cr (pidfd_getfd).
func (r *restorer) grab(fd int) (int, error) {
	pidfd, err := unix.PidfdOpen(r.task.Pid, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(pidfd)
	got, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return 0, fmt.Errorf("pidfd_getfd: %w", err)
	}
	return got, nil
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
