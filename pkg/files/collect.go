package files

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/memdump"
	"golang.org/x/sys/unix"
)

// UnsupportedError names an fd cr cannot save yet. Pid is the process
// holding it when it is known here (0: the process being read).
type UnsupportedError struct {
	Pid  int
	Fd   int
	What string
}

func (e *UnsupportedError) Error() string {
	if e.Fd < 0 { // the cwd or root
		return e.What + ": not supported yet"
	}
	return fmt.Sprintf("fd %d is %s: not supported yet", e.Fd, e.What)
}

// Entry is one fd with its open file description.
type Entry struct {
	Fd      int
	Cloexec bool
	File    image.File
	MntID   int
}

// Table is a process's fd table; Files holds each description once.
type Table struct {
	Fds   []image.Fd
	Files []image.File
}

const (
	oCloexec     = 02000000
	kcmpFile     = 0      // KCMP_FILE, linux/kcmp.h
	kcmpEpollTfd = 7      // KCMP_EPOLL_TFD
	fionread     = 0x541b // FIONREAD, include/uapi/asm-generic/ioctls.h
)

// IsTTY reports whether a character device number is a terminal:
// /dev/tty*, /dev/console, /dev/ptmx (majors 4 and 5) or a pty (136-143).
func IsTTY(rdev uint64) bool {
	maj := unix.Major(rdev)
	return maj == 4 || maj == 5 || (maj >= 136 && maj <= 143)
}

// TTYError is a terminal fd, refused unless the caller allows terminals.
type TTYError struct {
	Fd   int
	Path string
}

func (e *TTYError) Error() string { return fmt.Sprintf("fd %d is the terminal %s", e.Fd, e.Path) }

// Read returns the fd table of pid. nextID numbers new file descriptions.
// With allowTTY, terminals are recorded as image.FileTTY instead of refused.
func Read(pid int, nextID int, allowTTY bool) (*Table, error) {
	c := NewCollector(allowTTY)
	c.nextID = nextID
	fds, err := c.Add(pid)
	if err != nil {
		return nil, err
	}
	if err := c.Finish(); err != nil {
		return nil, err
	}
	return &Table{Fds: fds, Files: c.Files}, nil
}

// Collector gathers the fd tables of several processes, storing every open
// file description once even when processes share it (inherited across
// fork: kcmp KCMP_FILE tells).
type Collector struct {
	allowTTY bool
	nextID   int
	Files    []image.File
	owner    map[int]ref // file id -> an fd holding it
	// byKey lists, per (dev, ino), the indexes into Files of its open
	// file descriptions, sorted in kcmp's order (see lookup).
	byKey map[[2]uint64][]int
	// pending is where lookup found that the last unmatched description
	// belongs in its bucket.
	pending  int
	procs    map[int][]image.Fd
	procUses []procUse // procfs paths naming a process, checked by Finish
	refused  []error   // what Finish found cr cannot save
}

type ref struct{ pid, fd int }

// NewCollector starts an empty collection.
func NewCollector(allowTTY bool) *Collector {
	return &Collector{allowTTY: allowTTY, nextID: 1, owner: map[int]ref{}, byKey: map[[2]uint64][]int{}, procs: map[int][]image.Fd{}}
}

// Add reads the fd table of pid.
func (c *Collector) Add(pid int) ([]image.Fd, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var fdnums []int
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil {
			fdnums = append(fdnums, fd)
		}
	}
	// Refused fds are left out and reported together at the end, so that
	// a dump (or cr check -t) names every reason at once.
	entries, refused := c.readAll(pid, fdnums)
	if refused != nil && !IsRefusal(refused) {
		return nil, refused
	}
	for _, ent := range entries {
		if p := ent.File.Ident.Proc; p != nil {
			c.procUses = append(c.procUses, procUse{pid: pid, fd: ent.Fd, path: p, flags: int(ent.File.Flags)})
		}
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Fd < entries[j].Fd })

	var fds []image.Fd
	for _, e := range entries {
		k := [2]uint64{e.File.Ident.Dev, e.File.Ident.Ino}
		id, err := c.lookup(k, pid, e.Fd)
		if err != nil {
			return nil, err
		}
		if id < 0 {
			id = c.nextID
			c.nextID++
			e.File.ID = id
			c.owner[id] = ref{pid, e.Fd}
			c.Files = append(c.Files, e.File)
			c.insert(k, len(c.Files)-1)
		}
		fds = append(fds, image.Fd{Fd: e.Fd, FileID: id, Cloexec: e.Cloexec})
	}
	c.procs[pid] = fds
	return fds, refused
}

// readAll reads every fd of fdnums. The reads are /proc work done in the
// kernel (readlink, fdinfo, stat: ~25 µs an fd here), so a large table is
// split between one goroutine per CPU. The first error, in fd order, wins.
func (c *Collector) readAll(pid int, fdnums []int) ([]Entry, error) {
	entries := make([]Entry, len(fdnums))
	errs := make([]error, len(fdnums))
	workers := runtime.GOMAXPROCS(0)
	if len(fdnums) < 256 || workers < 2 {
		workers = 1
	}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < len(fdnums); i += workers {
				entries[i], errs[i] = readOne(pid, fdnums[i], c.allowTTY)
			}
		}(w)
	}
	wg.Wait()
	var refused []error
	kept := entries[:0]
	for i, err := range errs {
		switch {
		case err == nil:
			kept = append(kept, entries[i])
		case IsRefusal(err):
			refused = append(refused, err)
		default:
			return nil, err
		}
	}
	return kept, errors.Join(refused...)
}

// IsRefusal tells whether err is, or joins only, refusals of state cr cannot
// save (*UnsupportedError, *TTYError), as opposed to a failure to read it.
func IsRefusal(err error) bool {
	if err == nil {
		return false
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			if !IsRefusal(e) {
				return false
			}
		}
		return true
	}
	var ue *UnsupportedError
	var te *TTYError
	return errors.As(err, &ue) || errors.As(err, &te)
}

// Finish checks pipes (both ends must be in the collection) and saves their
// contents, and resolves epoll interest lists.
//
// Every description cr cannot save is reported, not only the first: the
// error then joins *UnsupportedError values (see IsRefusal); any other
// error is a failure to read the state.
func (c *Collector) Finish() error {
	c.refused = nil
	if err := c.checkProcPaths(); err != nil {
		return err
	}
	if err := c.resolvePipes(); err != nil {
		return err
	}
	if err := c.resolveSockets(); err != nil {
		return err
	}
	if err := c.resolveEpolls(); err != nil {
		return err
	}
	return errors.Join(c.refused...)
}

// refuse records a description cr cannot save; Finish reports them all.
func (c *Collector) refuse(err error) { c.refused = append(c.refused, err) }

// Owner returns a (pid, fd) that holds file id.
func (c *Collector) Owner(id int) (pid, fd int) {
	o := c.owner[id]
	return o.pid, o.fd
}

// resolvePipes checks that both ends of every pipe are in the collection
// and saves the bytes sitting in it, read without consuming them (tee(2)
// from a copy of the read end into a pipe of our own).
func (c *Collector) resolvePipes() error {
	type ends struct{ r, w []int } // indexes into c.Files
	pipes := map[uint64]*ends{}
	fifos := map[uint64]bool{}
	var order []uint64
	// A pipe any of whose descriptions is in packet mode (O_DIRECT) may
	// hold packets: their boundaries are saved too.
	direct := map[uint64]bool{}
	for i := range c.Files {
		if f := &c.Files[i]; f.Pipe != nil && f.Flags&unix.O_DIRECT != 0 {
			direct[f.Pipe.ID] = true
		}
	}
	for i := range c.Files {
		f := &c.Files[i]
		if f.Pipe == nil {
			continue
		}
		if f.Type == image.FileFIFO {
			if fifos[f.Pipe.ID] {
				continue
			}
			fifos[f.Pipe.ID] = true
			o := c.owner[f.ID]
			data, size, chunks, err := peekFIFO(o.pid, o.fd, direct[f.Pipe.ID])
			if err != nil {
				return fmt.Errorf("fd %d of pid %d: read FIFO contents: %w", o.fd, o.pid, err)
			}
			f.Pipe.Data, f.Pipe.Size, f.Pipe.Chunks = data, size, chunks
			continue
		}
		p := pipes[f.Pipe.ID]
		if p == nil {
			p = &ends{}
			pipes[f.Pipe.ID] = p
			order = append(order, f.Pipe.ID)
		}
		if f.Flags&unix.O_ACCMODE == unix.O_WRONLY {
			p.w = append(p.w, i)
		} else {
			p.r = append(p.r, i)
		}
	}
	for _, id := range order {
		p := pipes[id]
		if len(p.r) == 0 || len(p.w) == 0 {
			// An end of a pipeline with a process outside the tree: it is
			// external, given back by the caller at restore. A read end's
			// unread bytes are saved (they would be lost with the last
			// reader), a write end's stay in the pipe, with its reader.
			for _, i := range append(p.r, p.w...) {
				c.Files[i].External = fmt.Sprintf("pipe:[%d]", id)
			}
			if len(p.r) == 0 {
				continue
			}
		}
		rf := &c.Files[p.r[0]]
		o := c.owner[rf.ID]
		data, size, chunks, err := peekPipe(o.pid, o.fd, direct[id])
		if err != nil {
			return fmt.Errorf("fd %d of pid %d: read pipe contents: %w", o.fd, o.pid, err)
		}
		rf.Pipe.Data, rf.Pipe.Chunks = data, chunks
		for _, i := range append(p.r, p.w...) {
			c.Files[i].Pipe.Size = size
		}
	}
	return nil
}

// peekFIFO reads what sits in a FIFO through a reader of our own (the
// task's description may be write-only); opening a reader disturbs no one.
func peekFIFO(pid, fd int, packets bool) ([]byte, int, []image.PipeChunk, error) {
	src, err := unix.Open(fmt.Sprintf("/proc/%d/fd/%d", pid, fd), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, 0, nil, err
	}
	defer unix.Close(src)
	return peek(src, packets)
}

func peekPipe(pid, fd int, packets bool) ([]byte, int, []image.PipeChunk, error) {
	src, err := CopyFd(pid, fd)
	if err != nil {
		return nil, 0, nil, err
	}
	defer unix.Close(src)
	return peek(src, packets)
}

func peek(src int, packets bool) ([]byte, int, []image.PipeChunk, error) {
	if packets {
		return teePackets(src)
	}
	data, size, err := teePipe(src)
	return data, size, nil, err
}

// CopyFd returns a copy, in cr, of fd of process pid (pidfd_getfd: the same
// open file description, close-on-exec).
func CopyFd(pid, fd int) (int, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(pidfd)
	c, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_getfd fd %d of pid %d: %w", fd, pid, err)
	}
	return c, nil
}

// teePipe copies what sits in the pipe src without consuming it.
func teePipe(src int) ([]byte, int, error) {
	r, size, err := teeCopy(src)
	if err != nil || r < 0 {
		return nil, size, err
	}
	defer unix.Close(r)
	buf := make([]byte, size)
	var data []byte
	for {
		n, err := unix.Read(r, buf)
		if errors.Is(err, unix.EAGAIN) || n == 0 {
			return data, size, nil
		}
		if err != nil {
			return nil, 0, err
		}
		data = append(data, buf[:n]...)
	}
}

// teeCopy copies the contents of the pipe src, without consuming them, into
// a pipe of our own (tee(2) shares the pipe buffers, keeping their packet
// flags) and returns that pipe's non-blocking read end (-1: src is empty)
// and src's capacity.
func teeCopy(src int) (int, int, error) {
	size, err := unix.FcntlInt(uintptr(src), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		return -1, 0, err
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return -1, 0, err
	}
	defer unix.Close(p[1])
	if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, size); err != nil {
		unix.Close(p[0])
		return -1, 0, err
	}
	if _, err := unix.Tee(src, p[1], size, unix.SPLICE_F_NONBLOCK); err != nil {
		unix.Close(p[0])
		if errors.Is(err, unix.EAGAIN) {
			return -1, size, nil // empty
		}
		return -1, 0, err
	}
	return p[0], size, nil
}

// teePackets copies the contents of a pipe that may hold packets (pipe(7),
// O_DIRECT), with their boundaries, without consuming them. A read returns
// the stream bytes up to and including the next packet (pipe_read in
// fs/pipe.c stops after a packet buffer, and drops what of it does not fit),
// so one copy, read with whole-capacity reads, gives the contents cut at
// packet ends; a second copy, read one byte at a time while FIONREAD tells
// how much each read took, tells a packet (the whole of it goes) from stream
// bytes (one goes).
func teePackets(src int) ([]byte, int, []image.PipeChunk, error) {
	a, size, err := teeCopy(src)
	if err != nil || a < 0 {
		return nil, size, nil, err
	}
	defer unix.Close(a)
	b, _, err := teeCopy(src)
	if err != nil {
		return nil, 0, nil, err
	}
	if b < 0 {
		return nil, 0, nil, errors.New("the pipe emptied while being read")
	}
	defer unix.Close(b)
	// step reads one byte of b and returns how many bytes left it.
	step := func() (int, error) {
		before, err := unix.IoctlGetInt(b, fionread)
		if err != nil {
			return 0, err
		}
		var one [1]byte
		if _, err := unix.Read(b, one[:]); err != nil {
			return 0, err
		}
		after, err := unix.IoctlGetInt(b, fionread)
		return before - after, err
	}
	var data []byte
	var chunks []image.PipeChunk
	packets := false
	buf := make([]byte, size)
	for {
		n, err := unix.Read(a, buf)
		if errors.Is(err, unix.EAGAIN) || (err == nil && n == 0) {
			break
		}
		if err != nil {
			return nil, 0, nil, err
		}
		data = append(data, buf[:n]...)
		// This piece is stream bytes, then maybe one packet at its end.
		stream := 0
		for stream < n {
			took, err := step()
			if err != nil {
				return nil, 0, nil, err
			}
			if took > 1 || (took == 1 && stream == 0 && n == 1) {
				// The packet at the end (a 1-byte piece counts as one).
				if took != n-stream {
					return nil, 0, nil, fmt.Errorf("pipe packet of %d bytes where %d were expected", took, n-stream)
				}
				break
			}
			stream++
		}
		if stream > 0 {
			chunks = append(chunks, image.PipeChunk{Len: stream})
		}
		if stream < n {
			chunks = append(chunks, image.PipeChunk{Len: n - stream, Packet: true})
			packets = true
		}
	}
	if !packets {
		chunks = nil // plain stream bytes
	}
	return data, size, chunks, nil
}

// resolveEpolls maps every watched target to an fd of the epoll's process
// that holds the watched file (kcmp KCMP_EPOLL_TFD): the fd number an entry
// was registered with may since have been closed or reused.
func (c *Collector) resolveEpolls() error {
	for i := range c.Files {
		f := &c.Files[i]
		if f.Type != image.FileEpoll {
			continue
		}
		o := c.owner[f.ID]
		for j := range f.Epoll {
			tgt := &f.Epoll[j]
			found := -1
			candidates := []int{tgt.Fd}
			for _, fd := range c.procs[o.pid] {
				candidates = append(candidates, fd.Fd)
			}
			for _, fd := range candidates {
				same, err := sameEpollTarget(o.pid, fd, o.fd, tgt.Fd)
				if err == nil && same {
					found = fd
					break
				}
			}
			if found < 0 {
				c.refuse(&UnsupportedError{Pid: o.pid, Fd: o.fd, What: fmt.Sprintf("an epoll instance watching a file that is no longer open (registered as fd %d)", tgt.Fd)})
				continue
			}
			tgt.Fd = found
			if Disarmed(tgt.Events) {
				// Restore brings it back disarmed by letting it fire once,
				// which needs its file ready for some event.
				ready, err := readyEvents(o.pid, found)
				if err != nil {
					return fmt.Errorf("fd %d of pid %d: poll: %w", found, o.pid, err)
				}
				if ready == 0 {
					c.refuse(&UnsupportedError{Pid: o.pid, Fd: o.fd, What: fmt.Sprintf("an epoll instance with a one-shot entry for fd %d that has fired (disarmed) while its file is ready for no event: cr can bring such an entry back only when its file is ready", found)})
				}
			}
		}
	}
	return nil
}

// EpollPrivateBits are the event bits an EPOLLONESHOT entry keeps once it
// has fired (EP_PRIVATE_BITS, fs/eventpoll.c: EPOLLWAKEUP, EPOLLONESHOT,
// EPOLLET, EPOLLEXCLUSIVE).
const EpollPrivateBits = 1<<29 | 1<<30 | 1<<31 | 1<<28

// Disarmed reports whether an epoll entry's event mask (as fdinfo shows it)
// is that of a one-shot entry that has fired: only the private bits are
// left, so it reports nothing until EPOLL_CTL_MOD re-arms it.
func Disarmed(events uint32) bool {
	return events&unix.EPOLLONESHOT != 0 && events&^EpollPrivateBits == 0
}

// readyEvents polls fd of pid (a copy of it) for every event, without waiting.
func readyEvents(pid, fd int) (int16, error) {
	c, err := CopyFd(pid, fd)
	if err != nil {
		return 0, err
	}
	defer unix.Close(c)
	return PollNow(c)
}

// PollNow returns the events fd is ready for now (poll(2), all events).
func PollNow(fd int) (int16, error) {
	// POLLIN, PRI, OUT, RDNORM, RDBAND, WRNORM, WRBAND, MSG, RDHUP: the
	// same bits as the EPOLL* events (include/uapi/linux/eventpoll.h).
	const all = 0x1 | 0x2 | 0x4 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x2000
	pfd := []unix.PollFd{{Fd: int32(fd), Events: all}}
	if _, err := unix.Poll(pfd, 0); err != nil {
		return 0, err
	}
	return pfd[0].Revents &^ unix.POLLNVAL, nil
}

func sameEpollTarget(pid, fd, epfd, tfd int) (bool, error) {
	slot := struct{ Efd, Tfd, Toff uint32 }{uint32(epfd), uint32(tfd), 0}
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid), uintptr(pid), kcmpEpollTfd, uintptr(fd), uintptr(unsafe.Pointer(&slot)), 0)
	if e != 0 {
		return false, e
	}
	return r == 0, nil
}

// lookup returns the id of the open file description that fd of pid refers
// to, if the collection has it already, or -1. Descriptions of one (dev,
// ino) are kept sorted by kcmp(2) KCMP_FILE, which orders them (by their
// obfuscated kernel addresses: 0 equal, 1 less, 2 greater), so a binary
// search finds a match in O(log n) comparisons instead of one per
// description: 10,000 descriptions of one file cost ~140,000 kcmp calls,
// not 50 million. An unordered answer (3) falls back to comparing with
// every description of the bucket.
func (c *Collector) lookup(k [2]uint64, pid, fd int) (int, error) {
	b := c.byKey[k]
	lo, hi := 0, len(b)
	for lo < hi {
		mid := (lo + hi) / 2
		o := c.owner[c.Files[b[mid]].ID]
		r, err := kcmpFiles(o.pid, o.fd, pid, fd)
		if err != nil {
			return -1, err
		}
		switch r {
		case 0:
			return c.Files[b[mid]].ID, nil
		case 1: // the bucket's description sorts before ours
			lo = mid + 1
		case 2:
			hi = mid
		default:
			return c.lookupLinear(b, pid, fd)
		}
	}
	c.pending = lo
	return -1, nil
}

func (c *Collector) lookupLinear(b []int, pid, fd int) (int, error) {
	for _, fi := range b {
		o := c.owner[c.Files[fi].ID]
		r, err := kcmpFiles(o.pid, o.fd, pid, fd)
		if err != nil {
			return -1, err
		}
		if r == 0 {
			return c.Files[fi].ID, nil
		}
	}
	c.pending = len(b)
	return -1, nil
}

// insert adds Files[fi] to its bucket at the place the last lookup found.
func (c *Collector) insert(k [2]uint64, fi int) {
	b := append(c.byKey[k], 0)
	copy(b[c.pending+1:], b[c.pending:])
	b[c.pending] = fi
	c.byKey[k] = b
}

// kcmpFiles compares two open file descriptions (kcmp(2) KCMP_FILE): 0
// equal, 1 the first sorts before the second, 2 after, 3 unordered.
func kcmpFiles(pid1, fd1, pid2, fd2 int) (uintptr, error) {
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), kcmpFile, uintptr(fd1), uintptr(fd2), 0)
	if e != 0 {
		return 0, fmt.Errorf("kcmp fd %d of pid %d and fd %d of pid %d: %w", fd1, pid1, fd2, pid2, e)
	}
	return r, nil
}

func readOne(pid, fd int, allowTTY bool) (Entry, error) {
	e := Entry{Fd: fd}
	link := fmt.Sprintf("/proc/%d/fd/%d", pid, fd)
	target, err := os.Readlink(link)
	if err != nil {
		return e, fmt.Errorf("fd %d: %w", fd, err)
	}
	special := ""
	switch {
	case strings.HasPrefix(target, "pipe:"):
		special = image.FilePipe
	case target == "anon_inode:[eventfd]":
		special = image.FileEventfd
	case target == "anon_inode:[eventpoll]":
		special = image.FileEpoll
	case target == "anon_inode:[timerfd]":
		special = image.FileTimerfd
	case strings.HasPrefix(target, "socket:"):
		special = image.FileUnix // checked with sock_diag in Finish
	case strings.HasPrefix(target, "anon_inode:"):
		return e, &UnsupportedError{Fd: fd, What: anonKind(target)}
	case !strings.HasPrefix(target, "/"):
		return e, &UnsupportedError{Fd: fd, What: fmt.Sprintf("%q", target)}
	}
	if special != "" {
		return readSpecial(pid, fd, link, target, special)
	}
	e, _, err = baseEntry(pid, fd, link, target)
	if err != nil {
		return e, err
	}
	e.File.Ident.Proc = procPathOf(link, target)
	id := e.File.Ident
	var st unix.Stat_t
	switch id.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if strings.HasPrefix(target, "/memfd:") {
			e.File.Type = image.FileMemfd
			e.File.Shmem = id.Ino
			break
		}
		if fsMagic(link) == secretmemMagic {
			return e, &UnsupportedError{Fd: fd, What: "a memfd_secret area"}
		}
		if strings.HasSuffix(target, " (deleted)") {
			return e, &UnsupportedError{Fd: fd, What: "the deleted file " + strings.TrimSuffix(target, " (deleted)")}
		}
		e.File.Type = image.FileReg
	case unix.S_IFDIR:
		e.File.Type = image.FileDir
	case unix.S_IFCHR:
		if err := unix.Stat(link, &st); err != nil {
			return e, fmt.Errorf("fd %d: %w", fd, err)
		}
		e.File.Type = image.FileChr
		if IsTTY(st.Rdev) {
			if !allowTTY {
				return e, &TTYError{fd, target}
			}
			e.File.Type = image.FileTTY
		}
		e.File.Rdev = st.Rdev
	case unix.S_IFIFO:
		if strings.HasSuffix(target, " (deleted)") {
			return e, &UnsupportedError{Fd: fd, What: "a deleted FIFO (" + target + ")"}
		}
		e.File.Type = image.FileFIFO
		e.File.Pipe = &image.Pipe{ID: id.Ino}
	default:
		return e, &UnsupportedError{Fd: fd, What: fmt.Sprintf("an unsupported kind of file (%s, mode %o)", target, id.Mode)}
	}
	return e, nil
}

// readSpecial reads a pipe end, an eventfd or an epoll instance.
func readSpecial(pid, fd int, link, target, kind string) (Entry, error) {
	e, info, err := baseEntry(pid, fd, link, target)
	if err != nil {
		return e, err
	}
	id := e.File.Ident
	e.File.Type = kind
	switch kind {
	case image.FilePipe:
		e.File.Pipe = &image.Pipe{ID: id.Ino}
	case image.FileUnix:
		e.File.Unix = &image.UnixSocket{Ino: id.Ino}
	case image.FileTimerfd:
		// clockid, ticks, settime flags (octal), it_value: (sec, nsec), it_interval: (sec, nsec)
		tf := &image.Timerfd{}
		for _, line := range strings.Split(info, "\n") {
			k, v, _ := strings.Cut(line, ":")
			v = strings.TrimSpace(v)
			switch k {
			case "clockid":
				tf.Clock, _ = strconv.Atoi(v)
			case "ticks":
				tf.Ticks, _ = strconv.ParseUint(v, 10, 64)
			case "settime flags":
				f, _ := strconv.ParseInt(v, 8, 32)
				tf.SetFlags = int(f)
			case "it_value", "it_interval":
				var sec, nsec int64
				fmt.Sscanf(v, "(%d, %d)", &sec, &nsec)
				if k == "it_value" {
					tf.ValueNs = sec*1e9 + nsec
				} else {
					tf.IntervalNs = sec*1e9 + nsec
				}
			}
		}
		e.File.Timerfd = tf
	case image.FileEventfd:
		ev := &image.Eventfd{}
		for _, line := range strings.Split(info, "\n") {
			k, v, _ := strings.Cut(line, ":")
			v = strings.TrimSpace(v)
			switch k {
			case "eventfd-count":
				ev.Count, _ = strconv.ParseUint(v, 16, 64)
			case "eventfd-semaphore":
				ev.Semaphore = v == "1"
			}
		}
		e.File.Eventfd = ev
	case image.FileEpoll:
		// "tfd: %8d events: %8x data: %16llx pos:%lli ino:%lx sdev:%x" (fs/eventpoll.c)
		for _, line := range strings.Split(info, "\n") {
			if !strings.HasPrefix(line, "tfd:") {
				continue
			}
			f := strings.Fields(line)
			if len(f) < 6 {
				return e, fmt.Errorf("fd %d: malformed epoll fdinfo line %q", fd, line)
			}
			tfd, _ := strconv.Atoi(f[1])
			ev, _ := strconv.ParseUint(f[3], 16, 32)
			data, _ := strconv.ParseUint(f[5], 16, 64)
			e.File.Epoll = append(e.File.Epoll, image.EpollTarget{Fd: tfd, Events: uint32(ev), Data: data})
		}
	}
	return e, nil
}

// baseEntry reads what every fd has: the identity of its file and, from
// /proc/PID/fdinfo, its offset, flags (FD_CLOEXEC apart) and mount. It
// returns the fdinfo text for what is particular to its kind of file.
func baseEntry(pid, fd int, link, target string) (Entry, string, error) {
	e := Entry{Fd: fd}
	id, err := memdump.Identify(link, target)
	if err != nil {
		return e, "", fmt.Errorf("fd %d: %w", fd, err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
	if err != nil {
		return e, "", fmt.Errorf("fd %d: %w", fd, err)
	}
	var pos int64
	var flags uint32
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		v = strings.TrimSpace(v)
		switch k {
		case "pos":
			pos, _ = strconv.ParseInt(v, 10, 64)
		case "flags":
			x, _ := strconv.ParseUint(v, 8, 32)
			flags = uint32(x)
		case "mnt_id":
			e.MntID, _ = strconv.Atoi(v)
		}
	}
	e.Cloexec = flags&oCloexec != 0
	e.File = image.File{Flags: flags &^ oCloexec, Pos: pos, Ident: id}
	if locks := lockLines(string(b)); len(locks) > 0 {
		return e, "", lockError(fd, target, locks)
	}
	return e, string(b), nil
}

// ReadFS returns the cwd and root of pid.
func ReadFS(pid int) (image.FS, error) {
	var fs image.FS
	for _, x := range []struct {
		name string
		out  *image.FileIdent
	}{{"cwd", &fs.Cwd}, {"root", &fs.Root}} {
		link := fmt.Sprintf("/proc/%d/%s", pid, x.name)
		target, err := os.Readlink(link)
		if err != nil {
			return fs, fmt.Errorf("%s: %w", x.name, err)
		}
		if strings.HasSuffix(target, " (deleted)") {
			return fs, &memdump.UnsupportedError{What: fmt.Sprintf("the %s %s was deleted", x.name, target)}
		}
		id, err := memdump.Identify(link, target)
		if err != nil {
			return fs, err
		}
		id.Proc = procPathOf(link, target)
		*x.out = id
	}
	return fs, nil
}
