package restore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/cr-tools/cr/pkg/fdinfo"
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
	used := map[int]bool{}
	var files []*image.File // the descriptions of this process, in image order
	for _, e := range r.proc.Fds {
		used[e.FileID] = true
	}
	for i := range r.ck.Files {
		if used[r.ck.Files[i].ID] {
			files = append(files, &r.ck.Files[i])
		}
	}
	// Received fds land low; temporaries live above both them and every fd
	// of the image. Lift the soft fd limit meanwhile (the image's own limit
	// was set already).
	base := maxFd + 1
	temps := max(base, len(files)) + 2
	pid := r.task.Pid
	var nofile unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &nofile); err != nil {
		return err
	}
	if need := uint64(temps + len(files) + 8); nofile.Cur < need {
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
	var tr uintptr
	r.queueResult("move the fd transport", &tr, unix.SYS_FCNTL, uintptr(r.transport), unix.F_DUPFD_CLOEXEC, uintptr(base))
	r.queue("close stub fds", unix.SYS_CLOSE_RANGE, 0, uintptr(base-1), 0)
	if err := r.flush(); err != nil {
		return err
	}
	r.transport = int(tr)

	// Every description arrives (or, for an epoll instance made here, is
	// made) at the lowest free fd, in order, in batches of receives.
	low := make([]int, len(files))
	const perBatch = 64
	for start := 0; start < len(files); start += perBatch {
		chunk := files[start:min(start+perBatch, len(files))]
		ctls := make([]uintptr, len(chunk))
		results := make([]uintptr, len(chunk))
		for i, f := range chunk {
			if f.Type == image.FileEpoll && r.t.files[f.ID] == 0 {
				r.queueResult("epoll_create1", &results[i], unix.SYS_EPOLL_CREATE1, unix.EPOLL_CLOEXEC)
				continue
			}
			crfd, err := r.t.crFile(f)
			if err != nil {
				return fmt.Errorf("fd %d: %w", r.fdOf(f.ID), err)
			}
			if err := unix.Sendmsg(r.t.crEnd, []byte{0}, unix.UnixRights(crfd), nil, 0); err != nil {
				return fmt.Errorf("send fd to pid %d: %w", pid, err)
			}
			msg, ctl, err := r.stashMsghdr()
			if err != nil {
				return err
			}
			ctls[i] = ctl
			r.queue(fmt.Sprintf("fd %d: receive", r.fdOf(f.ID)), unix.SYS_RECVMSG, uintptr(r.transport), msg, unix.MSG_CMSG_CLOEXEC)
		}
		if err := r.flush(); err != nil {
			return err
		}
		for i := range chunk {
			if ctls[i] == 0 {
				low[start+i] = int(results[i])
				continue
			}
			fd, err := r.readRights(ctls[i])
			if err != nil {
				return err
			}
			low[start+i] = fd
		}
	}
	// One batch: park every description at a temporary fd, close the low
	// ones and the transport, dup each to its fd numbers, close the
	// temporaries, fill epoll interest lists.
	temp := map[int]int{} // file id -> temporary fd
	for i, f := range files {
		t := temps + i
		temp[f.ID] = t
		r.queue("park fd", unix.SYS_DUP3, uintptr(low[i]), uintptr(t), unix.O_CLOEXEC)
	}
	r.queue("close received fds", unix.SYS_CLOSE_RANGE, 0, uintptr(temps-1), 0)
	for _, e := range r.proc.Fds {
		cloexec := uintptr(0)
		if e.Cloexec {
			cloexec = unix.O_CLOEXEC
		}
		r.queue(fmt.Sprintf("fd %d", e.Fd), unix.SYS_DUP3, uintptr(temp[e.FileID]), uintptr(e.Fd), cloexec)
	}
	r.queue("close temporary fds", unix.SYS_CLOSE_RANGE, uintptr(temps), ^uintptr(0)>>32, 0)
	var epolls []*image.File
	for _, f := range files {
		if f.Type != image.FileEpoll || r.t.files[f.ID] != 0 {
			continue // not an epoll, or registered by the process that made it
		}
		epolls = append(epolls, f)
		epfd := r.fdOf(f.ID)
		for _, t := range f.Epoll {
			// struct epoll_event is packed on x86-64: u32 events, u64 data.
			ev := make([]byte, 12)
			binary.LittleEndian.PutUint32(ev, t.Events)
			binary.LittleEndian.PutUint64(ev[4:], t.Data)
			addr, err := r.stash(ev)
			if err != nil {
				return err
			}
			r.queue(fmt.Sprintf("fd %d: watch fd %d with epoll", epfd, t.Fd), unix.SYS_EPOLL_CTL, uintptr(epfd), unix.EPOLL_CTL_ADD, uintptr(t.Fd), addr)
		}
	}
	if err := r.flush(); err != nil {
		return err
	}
	// Other processes that share an epoll instance made here get it from cr.
	for _, f := range epolls {
		fd, err := r.grab(r.fdOf(f.ID))
		if err != nil {
			return err
		}
		r.t.files[f.ID] = fd
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
		if err := fillNonblock(ends[1], f.Pipe.Data, "pipe"); err != nil {
			return 0, err
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
	case image.FileTimerfd:
		tf := f.Timerfd
		if fd, err = unix.TimerfdCreate(tf.Clock, unix.TFD_CLOEXEC); err != nil {
			return 0, fmt.Errorf("timerfd_create: %w", err)
		}
		value := tf.ValueNs
		if value == 0 && tf.IntervalNs != 0 {
			value = tf.IntervalNs // expired while frozen: re-armed on read; start the next period
		}
		// Relative: the time left at the dump is the time left now.
		its := unix.ItimerSpec{Interval: unix.NsecToTimespec(tf.IntervalNs), Value: unix.NsecToTimespec(value)}
		if err = unix.TimerfdSettime(fd, 0, &its, nil); err == nil && tf.Ticks > 0 {
			ticks := tf.Ticks
			if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), tfdIocSetTicks, uintptr(unsafe.Pointer(&ticks))); e != 0 {
				err = fmt.Errorf("timerfd ticks (TFD_IOC_SET_TICKS): %w", e)
			}
		}
		if err == nil {
			err = setFlags(fd, f.Flags)
		}
	case image.FileFIFO:
		if fd, err = t.crFIFO(f); err != nil {
			return 0, err
		}
	case image.FileUnix:
		if fd, err = t.crSocket(f); err != nil {
			return 0, err
		}
		err = setFlags(fd, f.Flags)
	case image.FileMemfd:
		obj, oerr := t.crShmem(f.Shmem)
		if oerr != nil {
			return 0, oerr
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
	// Seals go on once every process has mapped it (a sealed memfd cannot
	// be mapped writable any more).
	return fd, nil
}

// sealShmem puts the seals back on the memfds, once everything is mapped.
func (t *treeRestore) sealShmem() error {
	for _, sh := range t.ck.Shmem {
		fd, ok := t.shmem[sh.ID]
		if !ok || sh.Seals == 0 {
			continue
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, sh.Seals); err != nil {
			return fmt.Errorf("memfd %q seals %#x: %w", sh.Name, sh.Seals, err)
		}
	}
	return nil
}

// tfdIocSetTicks is TFD_IOC_SET_TICKS, _IOW('T', 0, u64).
const tfdIocSetTicks = 0x40085400

// crFIFO opens a FIFO description by path. The first time, cr opens the
// FIFO read-write and non-blocking itself (so that no open blocks waiting
// for a peer) and puts back the bytes that sat in it; that fd is kept until
// the restore ends.
func (t *treeRestore) crFIFO(f *image.File) (int, error) {
	if _, ok := t.fifos[f.Pipe.ID]; !ok {
		keep, err := unix.Open(f.Ident.Path, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return 0, fmt.Errorf("open FIFO %s: %w", f.Ident.Path, err)
		}
		t.fifos[f.Pipe.ID] = keep
		if f.Pipe.Size > 0 {
			if _, err := unix.FcntlInt(uintptr(keep), unix.F_SETPIPE_SZ, f.Pipe.Size); err != nil {
				return 0, fmt.Errorf("FIFO size %d: %w", f.Pipe.Size, err)
			}
		}
		if err := fillNonblock(keep, f.Pipe.Data, "FIFO "+f.Ident.Path); err != nil {
			return 0, err
		}
	}
	fd, err := unix.Open(f.Ident.Path, int(f.Flags)&^(unix.O_CREAT|unix.O_EXCL|unix.O_TRUNC)|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open FIFO %s: %w", f.Ident.Path, err)
	}
	if err := setFlags(fd, f.Flags); err != nil {
		unix.Close(fd)
		return 0, err
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
		// Let the queue in whatever the buffers' sizes are now; the sender's
		// buffer is put back right after.
		total := 0
		for _, m := range u.Queue {
			total += len(m) + 1024
		}
		if cur, err := unix.GetsockoptInt(peer, unix.SOL_SOCKET, unix.SO_SNDBUF); err == nil && cur < 2*total {
			unix.SetsockoptInt(peer, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 2*total)
			defer unix.SetsockoptInt(peer, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, cur/2) // the kernel doubles it
		}
		for _, m := range u.Queue {
			if _, err := unix.SendmsgN(peer, m, nil, nil, unix.MSG_DONTWAIT); err != nil {
				return 0, fmt.Errorf("queue %d bytes on socket:[%d]: %w (the queue no longer fits)", len(m), u.Ino, err)
			}
		}
	}
	// The buffer sizes the process had (the kernel doubles what is set).
	if u.SndBuf > 0 {
		unix.SetsockoptInt(me, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, u.SndBuf/2)
	}
	if u.RcvBuf > 0 {
		unix.SetsockoptInt(me, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, u.RcvBuf/2)
	}
	if u.Shutdown != 0 {
		t.shutdowns = append(t.shutdowns, [2]int{me, u.Shutdown})
	}
	return unix.FcntlInt(uintptr(me), unix.F_DUPFD_CLOEXEC, 0)
}

// fillNonblock writes data into a pipe without ever blocking: data that
// does not fit is an error, not a hang.
func fillNonblock(fd int, data []byte, what string) error {
	if len(data) == 0 {
		return nil
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return err
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl|unix.O_NONBLOCK); err != nil {
		return err
	}
	defer unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl)
	for len(data) > 0 {
		n, err := unix.Write(fd, data)
		if err != nil {
			return fmt.Errorf("fill %s with its %d saved bytes: %w", what, len(data), err)
		}
		data = data[n:]
	}
	return nil
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
	msg, ctl, err := r.stashMsghdr()
	if err != nil {
		return 0, err
	}
	r.queue("receive fd", unix.SYS_RECVMSG, uintptr(r.transport), msg, unix.MSG_CMSG_CLOEXEC)
	if err := r.flush(); err != nil {
		return 0, err
	}
	return r.readRights(ctl)
}

// stashMsghdr stashes a struct msghdr {name, namelen, iov, iovlen, control,
// controllen, flags} with one iovec of one byte and room for one
// SCM_RIGHTS cmsg; it returns the msghdr's and the control buffer's
// addresses.
func (r *restorer) stashMsghdr() (msg, ctl uintptr, err error) {
	// Reserve the block first, then fill in the addresses inside it.
	buf := make([]byte, 128)
	base, err := r.stash(buf)
	if err != nil {
		return 0, 0, err
	}
	b := le64(0, 0, uint64(base+64), 1, uint64(base+96), 24, 0)
	b = append(b, make([]byte, 64-len(b))...)
	b = append(b, le64(uint64(base+80), 1)...)
	b = append(b, make([]byte, 128-len(b))...)
	if _, err := r.mem.WriteAt(b, int64(base)); err != nil {
		return 0, 0, err
	}
	return base, base + 96, nil
}

// readRights reads the fd a recvmsg put into the control buffer at ctl.
func (r *restorer) readRights(ctl uintptr) (int, error) {
	b := make([]byte, 24)
	if _, err := r.mem.ReadAt(b, int64(ctl)); err != nil {
		return 0, err
	}
	if int32(binary.LittleEndian.Uint32(b[12:])) != unix.SCM_RIGHTS {
		return 0, fmt.Errorf("receive fd: no SCM_RIGHTS message")
	}
	return int(int32(binary.LittleEndian.Uint32(b[16:]))), nil
}

// grab copies the task's fd into cr (pidfd_getfd).
func (r *restorer) grab(fd int) (int, error) { return fdinfo.CopyFd(r.task.Pid, fd) }

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
	r.queue("umask", unix.SYS_UMASK, uintptr(t.Umask))
	for _, sa := range t.Sigactions {
		if sa.Handler == 0 && sa.Flags == 0 && sa.Mask == 0 {
			continue // SIG_DFL, as in a new process
		}
		addr, err := r.stash(le64(sa.Handler, sa.Flags, sa.Restorer, sa.Mask))
		if err != nil {
			return err
		}
		r.queue(fmt.Sprintf("restore handler of signal %d", sa.Sig), unix.SYS_RT_SIGACTION, uintptr(sa.Sig), addr, 0, 8)
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
	if err := r.flush(); err != nil {
		return err
	}
	saved := r.in
	r.in = th.in
	defer func() { r.in = saved }()
	if err := f(); err != nil {
		r.pending, r.arena = nil, 0
		return err
	}
	return r.flush()
}

// restoreThread sets one thread's own state: name, rseq, clear_child_tid,
// robust list, alternate stack, timer slack and its signal queue.
func (r *restorer) restoreThread(th *image.Thread) error {
	name := th.Name
	if name == "" {
		name = r.proc.Task.Comm
	}
	p, err := r.stashString(name)
	if err != nil {
		return err
	}
	r.queue("set name", unix.SYS_PRCTL, unix.PR_SET_NAME, p)
	if th.Rseq != nil {
		r.queue(fmt.Sprintf("register rseq at %#x", th.Rseq.Ptr), unix.SYS_RSEQ, uintptr(th.Rseq.Ptr), uintptr(th.Rseq.Size), 0, uintptr(th.Rseq.Signature))
	}
	r.queue("set_tid_address", unix.SYS_SET_TID_ADDRESS, uintptr(th.ClearChildTid))
	if th.RobustList != 0 {
		r.queue("set_robust_list", sysSetRobustList, uintptr(th.RobustList), uintptr(th.RobustListLen))
	}
	if ts := r.proc.Task.Sched.TimerSlackNs; ts != 0 {
		r.queue("timer slack", unix.SYS_PRCTL, unix.PR_SET_TIMERSLACK, uintptr(ts))
	}
	return r.restoreThreadSignals(th)
}

// finish gives interrupted sleeps their restart block back (sleep.go),
// removes the trampoline (the last injected syscall runs from it and unmaps
// it) and loads every thread's registers, XSAVE state and mask.
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
	final, err := r.restartSleeps()
	if err != nil {
		return err
	}
	if _, err := r.sys(unix.SYS_MUNMAP, r.tramp, trampSize); err != nil {
		return fmt.Errorf("unmap trampoline: %w", err)
	}
	for i, th := range r.threads {
		img := &r.proc.Threads[i]
		regs := img.Regs.Ptrace()
		if final != nil && final[i] != nil {
			regs = *final[i] // a sleep given back its restart block (sleep.go)
		}
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
