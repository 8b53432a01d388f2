package restore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/cr-tools/cr/pkg/files"
	"slices"
	"unsafe"

	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// setRlimits sets every resource limit but RLIMIT_NOFILE from cr (prlimit
// on the task); setFdLimit sets that one once every fd is in place. A hard
// limit above ours cannot be raised without CAP_SYS_RESOURCE: then the soft
// limit is kept within our hard limit, and -v says so.
func (r *restorer) setRlimits() error {
	for _, l := range r.proc.Task.Rlimits {
		if l.Resource == unix.RLIMIT_NOFILE {
			continue
		}
		if err := r.setRlimit(l); err != nil {
			return err
		}
	}
	return nil
}

// setFdLimit sets the image's RLIMIT_NOFILE. Lowering a limit below fds
// that are open is allowed: they stay.
func (r *restorer) setFdLimit() error {
	for _, l := range r.proc.Task.Rlimits {
		if l.Resource == unix.RLIMIT_NOFILE {
			return r.setRlimit(l)
		}
	}
	return nil
}

func (r *restorer) setRlimit(l image.Rlimit) error {
	pid := r.task.Pid
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
	return nil
}

// FdPlan is how restore numbers a process's fds: where the fd transport
// (the unix socket that brings each open file into the process) sits while
// the fds are installed, and how many fd slots that needs.
type FdPlan struct {
	// Transport is the fd the transport sits at: the lowest fd number
	// the image leaves free below its highest fd; else the highest fd
	// whose open file another fd shares (installed last, by a dup3 that
	// replaces the transport); else one above the highest fd.
	Transport int
	// Last is that shared fd, or -1.
	Last int
	// Slots is the number of fd slots the task needs meanwhile (its
	// RLIMIT_NOFILE must be at least this): the highest fd + 1, or + 2
	// when the transport must sit above it.
	Slots int
}

// PlanFds plans the fd numbering for the fds of one process (any order).
// Every fd is installed at its own number in increasing order: a file
// received (SCM_RIGHTS puts it at the lowest free fd) lands at its number
// or, when the image leaves a lower fd free, there and is dup3'ed up; a
// file already installed is dup3'ed. So a full table (fds 0..limit-1) needs
// one slot more than the limit only when no two fds share an open file.
func PlanFds(fds []image.Fd) FdPlan {
	maxFd := -1
	target := map[int]bool{}
	users := map[int]int{}
	for _, e := range fds {
		maxFd = max(maxFd, e.Fd)
		target[e.Fd] = true
		users[e.FileID]++
	}
	p := FdPlan{Transport: -1, Last: -1}
	for i := 0; i <= maxFd; i++ {
		if !target[i] {
			p.Transport = i
			break
		}
	}
	if p.Transport < 0 {
		for _, e := range fds {
			if users[e.FileID] > 1 && e.Fd > p.Last {
				p.Last = e.Fd
			}
		}
		p.Transport = p.Last
	}
	if p.Transport < 0 {
		p.Transport = maxFd + 1
	}
	p.Slots = max(maxFd, p.Transport) + 1
	return p
}

// fdLimitError says a process's fd table cannot be rebuilt within the fd
// limit cr can give it.
func fdLimitError(pid int, plan FdPlan, hard uint64) error {
	maxFd := plan.Slots - 1
	if plan.Transport == plan.Slots-1 && plan.Last < 0 {
		maxFd-- // the transport sits above the table
		if uint64(plan.Slots) == hard+1 {
			return fmt.Errorf("pid %d: fds 0 to %d are all open and no two share an open file: restoring them needs one fd slot more (%d) than the hard fd limit %d cr can give the process; raise cr's hard fd limit (ulimit -Hn)", pid, maxFd, plan.Slots, hard)
		}
	}
	return fmt.Errorf("pid %d: fd %d is at or above the hard fd limit %d cr can give the process; raise cr's hard fd limit (ulimit -Hn) to at least %d", pid, maxFd, hard, plan.Slots)
}

// restoreFiles closes the stub's fds and rebuilds the fd table with the
// numbering of PlanFds: every open file description is created once (files
// reopened with their flags and offset, pipes with their contents,
// eventfds, epoll instances), received at its lowest fd, and dup3'ed to
// its other fd numbers, so that fds that shared a description share one
// again; epoll interest lists are filled last, when every watched fd is in
// place. The task's soft fd limit is lifted to its hard limit meanwhile;
// setFdLimit sets the image's limit afterwards.
func (r *restorer) restoreFiles() error {
	fds := slices.Clone(r.proc.Fds)
	slices.SortFunc(fds, func(a, b image.Fd) int { return a.Fd - b.Fd })
	plan := PlanFds(fds)
	byID := map[int]*image.File{}
	for i := range r.ck.Files {
		byID[r.ck.Files[i].ID] = &r.ck.Files[i]
	}
	pid := r.task.Pid
	var nofile unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &nofile); err != nil {
		return fmt.Errorf("read the fd limit: %w", err)
	}
	if need := uint64(plan.Slots); nofile.Cur < need {
		lifted := unix.Rlimit{Cur: max(need, nofile.Max), Max: max(need, nofile.Max)}
		if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &lifted, nil); err != nil {
			if nofile.Max < need {
				return fdLimitError(r.proc.Task.Pid, plan, nofile.Max)
			}
			return fmt.Errorf("lift the fd limit to %d: %w", lifted.Cur, err)
		}
	}
	// The transport goes to its slot; everything else the stub left is closed.
	if tr := plan.Transport; tr != r.transport {
		r.queue("move the fd transport", unix.SYS_DUP3, uintptr(r.transport), uintptr(tr), unix.O_CLOEXEC)
	}
	if plan.Transport > 0 {
		r.queue("close stub fds", unix.SYS_CLOSE_RANGE, 0, uintptr(plan.Transport-1), 0)
	}
	r.queue("close stub fds", unix.SYS_CLOSE_RANGE, uintptr(plan.Transport+1), ^uintptr(0)>>32, 0)
	r.transport = plan.Transport
	// The lowest fd the image leaves free (other than the transport's):
	// where a received file lands when its own number is not the lowest
	// free one.
	hole := plan.Slots
	{
		target := map[int]bool{plan.Transport: true}
		for _, e := range fds {
			target[e.Fd] = true
		}
		for i := 0; i < plan.Slots; i++ {
			if !target[i] {
				hole = i
				break
			}
		}
	}
	type arrival struct {
		fd     int // where it must land
		ctl    uintptr
		result uintptr // of epoll_create1
		made   bool
	}
	var batch []*arrival
	check := func() error {
		if err := r.flush(); err != nil {
			return err
		}
		for _, a := range batch {
			got := int(a.result)
			if !a.made {
				var err error
				if got, err = r.readRights(a.ctl); err != nil {
					return fmt.Errorf("fd %d: %w", a.fd, err)
				}
			}
			if got != a.fd {
				return fmt.Errorf("fd %d: the file arrived at fd %d instead", a.fd, got)
			}
		}
		batch = batch[:0]
		return nil
	}
	at := map[int]int{} // file id -> fd where it is installed
	const perBatch = 64
	for _, e := range fds {
		if e.Fd == plan.Last {
			continue // replaces the transport at the end
		}
		cloexec := uintptr(0)
		if e.Cloexec {
			cloexec = unix.O_CLOEXEC
		}
		if x, ok := at[e.FileID]; ok {
			r.queue(fmt.Sprintf("fd %d", e.Fd), unix.SYS_DUP3, uintptr(x), uintptr(e.Fd), cloexec)
			continue
		}
		f := byID[e.FileID]
		if f == nil {
			return fmt.Errorf("image is inconsistent: fd %d refers to file %d, which is not in it", e.Fd, e.FileID)
		}
		land := e.Fd
		if hole < e.Fd {
			land = hole
			cloexec = unix.O_CLOEXEC
		}
		a := &arrival{fd: land}
		if f.Type == image.FileEpoll && r.t.files[f.ID] == 0 {
			a.made = true
			r.queueResult(fmt.Sprintf("fd %d: epoll_create1", e.Fd), &a.result, unix.SYS_EPOLL_CREATE1, cloexec)
		} else {
			crfd, err := r.t.crFile(f)
			if err != nil {
				return fmt.Errorf("fd %d: %w", e.Fd, err)
			}
			if err := unix.Sendmsg(r.t.crEnd, []byte{0}, unix.UnixRights(crfd), nil, 0); err != nil {
				return fmt.Errorf("send fd %d to pid %d: %w", e.Fd, pid, err)
			}
			msg, ctl, err := r.stashMsghdr()
			if err != nil {
				return err
			}
			a.ctl = ctl
			flags := uintptr(0)
			if cloexec != 0 {
				flags = unix.MSG_CMSG_CLOEXEC
			}
			r.queue(fmt.Sprintf("fd %d: receive", e.Fd), unix.SYS_RECVMSG, uintptr(r.transport), msg, flags)
		}
		batch = append(batch, a)
		if land != e.Fd {
			c := uintptr(0)
			if e.Cloexec {
				c = unix.O_CLOEXEC
			}
			r.queue(fmt.Sprintf("fd %d", e.Fd), unix.SYS_DUP3, uintptr(land), uintptr(e.Fd), c)
			r.queue(fmt.Sprintf("fd %d: close the temporary fd %d", e.Fd, land), unix.SYS_CLOSE, uintptr(land))
		}
		at[e.FileID] = e.Fd
		if len(batch) == perBatch {
			if err := check(); err != nil {
				return err
			}
		}
	}
	if err := check(); err != nil {
		return err
	}
	// The transport goes last: replaced by the last fd, or closed.
	if plan.Last >= 0 {
		e := fds[slices.IndexFunc(fds, func(e image.Fd) bool { return e.Fd == plan.Last })]
		cloexec := uintptr(0)
		if e.Cloexec {
			cloexec = unix.O_CLOEXEC
		}
		r.queue(fmt.Sprintf("fd %d (over the fd transport)", e.Fd), unix.SYS_DUP3, uintptr(at[e.FileID]), uintptr(e.Fd), cloexec)
	} else {
		r.queue("close the fd transport", unix.SYS_CLOSE, uintptr(r.transport))
	}
	r.transport = -1
	var mine []*image.File // the descriptions of this process
	for i := range r.ck.Files {
		if _, ok := at[r.ck.Files[i].ID]; ok {
			mine = append(mine, &r.ck.Files[i])
		}
	}
	epolls, err := r.fillEpolls(mine)
	if err != nil {
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

// fillEpolls fills the interest lists of the epoll instances made in this
// process (files: its descriptions, every fd in place or queued) and returns
// those instances.
//
// An EPOLLONESHOT entry that had fired (files.Disarmed) must come back
// disarmed, but EPOLL_CTL_ADD and _MOD always add EPOLLERR|EPOLLHUP
// (do_epoll_ctl, fs/eventpoll.c): it would report a hang-up. So it is
// added first, alone, with the events its file is ready for now, and made
// to fire once by an injected epoll_wait, which leaves it with only its
// private bits (ep_send_events), as dumped. The dump made sure the file was
// ready for something.
func (r *restorer) fillEpolls(descs []*image.File) ([]*image.File, error) {
	var epolls []*image.File
	for _, f := range descs {
		if f.Type == image.FileEpoll && r.t.files[f.ID] == 0 {
			epolls = append(epolls, f) // not registered by another process that made it
		}
	}
	if err := r.flush(); err != nil { // every fd in place
		return nil, err
	}
	watch := func(epfd int, t image.EpollTarget, events uint32) error {
		// struct epoll_event is packed on x86-64: u32 events, u64 data.
		ev := make([]byte, 12)
		binary.LittleEndian.PutUint32(ev, events)
		binary.LittleEndian.PutUint64(ev[4:], t.Data)
		addr, err := r.stash(ev)
		if err != nil {
			return err
		}
		r.queue(fmt.Sprintf("fd %d: watch fd %d with epoll", epfd, t.Fd), unix.SYS_EPOLL_CTL, uintptr(epfd), unix.EPOLL_CTL_ADD, uintptr(t.Fd), addr)
		return nil
	}
	for _, f := range epolls {
		epfd := r.fdOf(f.ID)
		fired := 0
		for _, t := range f.Epoll {
			if !files.Disarmed(t.Events) {
				continue
			}
			c, err := r.grab(t.Fd)
			if err != nil {
				return nil, fmt.Errorf("fd %d: one-shot entry for fd %d: %w", epfd, t.Fd, err)
			}
			ready, err := files.PollNow(c)
			unix.Close(c)
			if err != nil || ready == 0 {
				return nil, fmt.Errorf("fd %d: one-shot entry for fd %d that had fired: its file is ready for no event, so it cannot be brought back disarmed (%v)", epfd, t.Fd, err)
			}
			if err := watch(epfd, t, t.Events|uint32(uint16(ready))); err != nil {
				return nil, err
			}
			fired++
		}
		if fired == 0 {
			continue
		}
		if err := r.flush(); err != nil {
			return nil, err
		}
		buf, err := r.put(0, make([]byte, 12*(fired+1)))
		if err != nil {
			return nil, err
		}
		n, err := r.sys(unix.SYS_EPOLL_WAIT, uintptr(epfd), buf, uintptr(fired+1), 0)
		if err != nil {
			return nil, fmt.Errorf("fd %d: fire one-shot entries (epoll_wait): %w", epfd, err)
		}
		if int(n) != fired {
			return nil, fmt.Errorf("fd %d: %d of %d one-shot entries fired: they cannot be brought back disarmed", epfd, n, fired)
		}
	}
	for _, f := range epolls {
		epfd := r.fdOf(f.ID)
		for _, t := range f.Epoll {
			if files.Disarmed(t.Events) {
				continue
			}
			if err := watch(epfd, t, t.Events); err != nil {
				return nil, err
			}
		}
	}
	return epolls, r.flush()
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
	if f.External != "" {
		return t.crExternal(f)
	}
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
		if err := fillPipe(ends[1], f.Pipe, "pipe"); err != nil {
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
		if f.Ident.Proc != nil {
			path = files.ProcPathString(f.Ident.Proc) // the restored process's (same pid)
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
		if err := fillPipe(keep, f.Pipe, "FIFO "+f.Ident.Path); err != nil {
			return 0, err
		}
	}
	// open(2) refuses O_DIRECT on a FIFO (packet mode is set by fcntl):
	// setFlags puts it on.
	fd, err := unix.Open(f.Ident.Path, int(f.Flags)&^(unix.O_CREAT|unix.O_EXCL|unix.O_TRUNC|unix.O_DIRECT)|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
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

// fillPipe puts a pipe's saved bytes back through its write end fd: stream
// bytes as they come, each packet (image.PipeChunk) by one write in packet
// mode (O_DIRECT), so that a read gets it back whole and alone.
func fillPipe(fd int, p *image.Pipe, what string) error {
	if len(p.Chunks) == 0 {
		return fillNonblock(fd, p.Data, what)
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return err
	}
	defer unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl)
	data := p.Data
	for _, c := range p.Chunks {
		if c.Len <= 0 || c.Len > len(data) || (c.Packet && c.Len > pageSize) {
			return fmt.Errorf("image is inconsistent: %s: a chunk of %d bytes in %d saved bytes", what, c.Len, len(data))
		}
		mode := fl &^ unix.O_DIRECT
		if c.Packet {
			mode = fl | unix.O_DIRECT
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, mode); err != nil {
			return fmt.Errorf("%s: packet mode: %w", what, err)
		}
		if !c.Packet {
			if err := fillNonblock(fd, data[:c.Len], what); err != nil {
				return err
			}
		} else if err := writePacket(fd, data[:c.Len], what); err != nil {
			return err
		}
		data = data[c.Len:]
	}
	if len(data) != 0 {
		return fmt.Errorf("image is inconsistent: %s: %d saved bytes in no chunk", what, len(data))
	}
	return nil
}

// writePacket writes one packet into a packet-mode pipe without blocking.
func writePacket(fd int, b []byte, what string) error {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return err
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl|unix.O_NONBLOCK); err != nil {
		return err
	}
	n, err := unix.Write(fd, b)
	if err == nil && n != len(b) {
		err = fmt.Errorf("short write (%d bytes)", n)
	}
	if err != nil {
		return fmt.Errorf("fill %s with a saved packet of %d bytes: %w", what, len(b), err)
	}
	return nil
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
func (r *restorer) grab(fd int) (int, error) { return files.CopyFd(r.task.Pid, fd) }

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
	if err := r.restoreSigactions(); err != nil {
		return err
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
		xs, err := xsaveArea(r.ck, img)
		if err != nil {
			return fmt.Errorf("xsave state of thread %d: %w", img.Tid, err)
		}
		if err := th.task.SetXState(xs); err != nil {
			return fmt.Errorf("set xsave state of thread %d (%d bytes): %w", img.Tid, len(xs), err)
		}
		if err := th.task.SetSigmask(img.Sigmask); err != nil {
			return err
		}
	}
	return nil
}

// externalFd returns the caller's fd that stands for the external file f
// (see Options.InheritFds), or an error naming the fd and the option.
func (t *treeRestore) externalFd(f *image.File) (int, error) {
	if fd, ok := t.opt.InheritFds[f.External]; ok {
		return fd, nil
	}
	// The lowest of fds 0-2 a process of the image held it at.
	low := -1
	for _, p := range t.ck.Processes {
		for _, e := range p.Fds {
			if e.FileID == f.ID && e.Fd <= 2 && (low < 0 || e.Fd < low) {
				low = e.Fd
			}
		}
	}
	if low >= 0 {
		return low, nil
	}
	pid, fd := -1, -1
	for _, p := range t.ck.Processes {
		for _, e := range p.Fds {
			if e.FileID == f.ID && pid < 0 {
				pid, fd = p.Task.Pid, e.Fd
			}
		}
	}
	return -1, fmt.Errorf("pid %d fd %d is %s, whose other end was outside the dumped processes: give its replacement with --inherit-fd fd[N]:%s", pid, fd, f.External, f.External)
}

// crExternal returns cr's own descriptor of the caller's fd that replaces
// the external file f. Its open file description is the caller's: its
// flags and offset are not changed. Unread bytes saved from an external
// pipe's read end are written into the new pipe, after whatever it holds.
func (t *treeRestore) crExternal(f *image.File) (int, error) {
	src, err := t.externalFd(f)
	if err != nil {
		return 0, err
	}
	fd, err := unix.FcntlInt(uintptr(src), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("%s: the inherited fd %d: %w", f.External, src, err)
	}
	if f.Pipe != nil && len(f.Pipe.Data) > 0 {
		if err := refillExternal(fd, f); err != nil {
			unix.Close(fd)
			return 0, err
		}
	}
	t.files[f.ID] = fd
	return fd, nil
}

func refillExternal(fd int, f *image.File) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return fmt.Errorf("%s held %d unread bytes, but its replacement is not a pipe to put them in", f.External, len(f.Pipe.Data))
	}
	w, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", fd), unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%s: open a writer to put its %d unread bytes back: %w", f.External, len(f.Pipe.Data), err)
	}
	defer unix.Close(w)
	return fillNonblock(w, f.Pipe.Data, "pipe "+f.External)
}
