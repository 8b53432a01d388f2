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
	at := map[int]int{}    // file id -> fd where it is installed
	var made []*image.File // descriptions made in this task (files.InTask)
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
		if mk, ok := files.ByType(f.Type).(files.InTask); ok && !r.t.made(f.ID) && f.External == "" {
			a.made = true
			made = append(made, f)
			nr, args := mk.Call(f, cloexec != 0)
			r.queueResult(fmt.Sprintf("fd %d: make %s", e.Fd, f.Type), &a.result, nr, args...)
		} else {
			crfd, err := r.t.open.Open(f)
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
	if err := r.fixFiles(at, made); err != nil {
		return err
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

// fixFiles runs, once every fd of the process is in place, the fix-ups of
// the kinds that need other files first (files.Fixer: epoll interest
// lists), each with its descriptions that this process made (files.InTask)
// or, for kinds made by cr, holds; at maps file ids to their fds here. The
// descriptions made here are then copied into cr for the other processes
// that hold them.
func (r *restorer) fixFiles(at map[int]int, made []*image.File) error {
	if err := r.flush(); err != nil { // every fd in place
		return err
	}
	isMade := map[int]bool{}
	for _, f := range made {
		isMade[f.ID] = true
	}
	tf := taskFiles{r}
	for _, k := range files.Kinds() {
		fx, ok := k.(files.Fixer)
		if !ok {
			continue
		}
		_, inTask := k.(files.InTask)
		var mine []*image.File
		for i := range r.ck.Files {
			f := &r.ck.Files[i]
			if _, here := at[f.ID]; here && f.Type == k.Type() && (!inTask || isMade[f.ID]) {
				mine = append(mine, f)
			}
		}
		if len(mine) == 0 {
			continue
		}
		if err := fx.Fix(tf, mine); err != nil {
			return err
		}
	}
	for _, f := range made {
		fd, err := r.grab(r.fdOf(f.ID))
		if err != nil {
			return err
		}
		r.t.open.Set(f.ID, fd)
	}
	return nil
}

// taskFiles is the process being rebuilt as the kinds see it (files.Task).
type taskFiles struct{ r *restorer }

func (t taskFiles) Pid() int                                       { return t.r.task.Pid }
func (t taskFiles) FdOf(id int) int                                { return t.r.fdOf(id) }
func (t taskFiles) Queue(what string, nr uintptr, args ...uintptr) { t.r.queue(what, nr, args...) }
func (t taskFiles) Flush() error                                   { return t.r.flush() }
func (t taskFiles) Stash(b []byte) (uintptr, error)                { return t.r.stash(b) }
func (t taskFiles) Put(b []byte) (uintptr, error)                  { return t.r.put(0, b) }
func (t taskFiles) Sys(nr uintptr, args ...uintptr) (uintptr, error) {
	return t.r.sys(nr, args...)
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

// crShmem returns cr's fd of a shared memory object, making it (with its
// contents) the first time: MAP_SHARED anonymous memory is made the way the
// process made it, so that /proc/PID/maps shows "/dev/zero (deleted)"
// again: cr maps it itself and keeps the object through map_files.
func (t *treeRestore) Shmem(id uint64) (int, error) {
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
	case image.ShmemGhost: // a deleted file (pkg/files ghost.go)
		if fd, err = files.MakeGhost(sh); err != nil {
			return 0, err
		}
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
	if sh.Kind == image.ShmemGhost && t.isExe(id) {
		// A deleted executable: PR_SET_MM_MAP's exe_fd refuses a file
		// open for writing anywhere (EACCES), so cr keeps a read-only one.
		ro, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", fd), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return 0, fmt.Errorf("the deleted executable %s: %w", sh.Path, err)
		}
		unix.Close(fd)
		t.shmem[id], fd = ro, ro
	}
	return fd, nil
}

// isExe tells whether the saved deleted file id is a process's executable.
func (t *treeRestore) isExe(id uint64) bool {
	for _, p := range t.ck.Processes {
		if p.MM.ExeGhost == id {
			return true
		}
	}
	return false
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
	var exe int
	var err error
	if mm.ExeGhost != 0 { // deleted: its saved copy
		var obj int
		if obj, err = r.t.Shmem(mm.ExeGhost); err == nil {
			exe, err = r.receive(obj)
		}
	} else {
		exe, err = r.openInTask(mm.Exe.Path, unix.O_RDONLY|unix.O_CLOEXEC)
	}
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

// Inherited returns the caller's fd that stands for the external file f
// (see Options.InheritFds), or an error naming the fd and the option
// (files.Env).
func (t *treeRestore) Inherited(f *image.File) (int, error) {
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
	what := f.External
	if d := files.Describe(f); d != f.External && d != f.Ident.Path {
		what += " (" + d + ")"
	}
	return -1, fmt.Errorf("pid %d fd %d is %s, whose other end was outside the dumped processes: give its replacement with --inherit-fd fd[N]:%s", pid, fd, what, f.External)
}
