package fdinfo

import (
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

// UnsupportedError names an fd cr cannot save yet.
type UnsupportedError struct {
	Fd   int
	What string
}

func (e *UnsupportedError) Error() string {
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
	kcmpFile     = 0 // KCMP_FILE, linux/kcmp.h
	kcmpEpollTfd = 7 // KCMP_EPOLL_TFD
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
	pending int
	procs   map[int][]image.Fd
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
	entries, err := c.readAll(pid, fdnums)
	if err != nil {
		return nil, err
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
	return fds, nil
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
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return entries, nil
}

// Finish checks pipes (both ends must be in the collection) and saves their
// contents, and resolves epoll interest lists.
func (c *Collector) Finish() error {
	if err := c.resolvePipes(); err != nil {
		return err
	}
	if err := c.resolveSockets(); err != nil {
		return err
	}
	return c.resolveEpolls()
}

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
			data, size, err := peekFIFO(o.pid, o.fd)
			if err != nil {
				return fmt.Errorf("fd %d of pid %d: read FIFO contents: %w", o.fd, o.pid, err)
			}
			f.Pipe.Data, f.Pipe.Size = data, size
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
		data, size, err := peekPipe(o.pid, o.fd)
		if err != nil {
			return fmt.Errorf("fd %d of pid %d: read pipe contents: %w", o.fd, o.pid, err)
		}
		rf.Pipe.Data = data
		for _, i := range append(p.r, p.w...) {
			c.Files[i].Pipe.Size = size
		}
	}
	return nil
}

// peekFIFO reads what sits in a FIFO through a reader of our own (the
// task's description may be write-only); opening a reader disturbs no one.
func peekFIFO(pid, fd int) ([]byte, int, error) {
	src, err := unix.Open(fmt.Sprintf("/proc/%d/fd/%d", pid, fd), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, 0, err
	}
	defer unix.Close(src)
	return teePipe(src)
}

func peekPipe(pid, fd int) ([]byte, int, error) {
	src, err := CopyFd(pid, fd)
	if err != nil {
		return nil, 0, err
	}
	defer unix.Close(src)
	return teePipe(src)
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
	size, err := unix.FcntlInt(uintptr(src), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		return nil, 0, err
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, 0, err
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, size); err != nil {
		return nil, 0, err
	}
	n, err := unix.Tee(src, p[1], size, unix.SPLICE_F_NONBLOCK)
	if err == unix.EAGAIN {
		return nil, size, nil // empty
	}
	if err != nil {
		return nil, 0, err
	}
	buf := make([]byte, n)
	for got := 0; got < len(buf); {
		m, err := unix.Read(p[0], buf[got:])
		if err != nil {
			return nil, 0, err
		}
		got += m
	}
	return buf, size, nil
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
				return &UnsupportedError{o.fd, fmt.Sprintf("an epoll instance watching a file that is no longer open (registered as fd %d)", tgt.Fd)}
			}
			tgt.Fd = found
		}
	}
	return nil
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
		kind := strings.Trim(strings.TrimPrefix(target, "anon_inode:"), "[]")
		return e, &UnsupportedError{fd, "an " + kind}
	case !strings.HasPrefix(target, "/"):
		return e, &UnsupportedError{fd, fmt.Sprintf("%q", target)}
	}
	if special != "" {
		return readSpecial(pid, fd, link, target, special)
	}
	e, _, err = baseEntry(pid, fd, link, target)
	if err != nil {
		return e, err
	}
	id := e.File.Ident
	var st unix.Stat_t
	switch id.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if strings.HasPrefix(target, "/memfd:") {
			e.File.Type = image.FileMemfd
			e.File.Shmem = id.Ino
			break
		}
		if strings.HasSuffix(target, " (deleted)") {
			return e, &UnsupportedError{fd, "the deleted file " + strings.TrimSuffix(target, " (deleted)")}
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
			return e, &UnsupportedError{fd, "a deleted FIFO (" + target + ")"}
		}
		e.File.Type = image.FileFIFO
		e.File.Pipe = &image.Pipe{ID: id.Ino}
	default:
		return e, &UnsupportedError{fd, fmt.Sprintf("an unsupported kind of file (%s, mode %o)", target, id.Mode)}
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
		*x.out = id
	}
	return fs, nil
}
