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
	// Why, if set, replaces "not supported yet": what makes the state
	// refused and how to get past it (a TCP connection without
	// --tcp-established).
	Why string
	// Option, if set, is the cr dump option that saves the state
	// ("--file-locks"): the message then ends "dump with --file-locks to
	// save it" (or Does, if set, in place of "to save it") instead of
	// "not supported yet".
	Option string
	Does   string
}

func (e *UnsupportedError) Error() string {
	end := "not supported yet"
	if e.Option != "" {
		does := e.Does
		if does == "" {
			does = "to save it"
		}
		end = "dump with " + e.Option + " " + does
	}
	if e.Why != "" {
		if e.Option != "" {
			return fmt.Sprintf("fd %d (%s) %s: %s", e.Fd, e.What, e.Why, end)
		}
		return fmt.Sprintf("fd %d (%s) %s", e.Fd, e.What, e.Why)
	}
	if e.Fd < 0 { // the cwd or root
		return e.What + ": " + end
	}
	return fmt.Sprintf("fd %d is %s: %s", e.Fd, e.What, end)
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
	// GhostLimit is the largest deleted file saved, in bytes (0:
	// DefaultGhostLimit).
	GhostLimit int64
	nextID     int
	Files      []image.File
	owner      map[int]ref // file id -> an fd holding it
	// byKey lists, per (dev, ino), the indexes into Files of its open
	// file descriptions, sorted in kcmp's order (see lookup).
	byKey map[[2]uint64][]int
	// pending is where lookup found that the last unmatched description
	// belongs in its bucket.
	pending  int
	procs    map[int][]image.Fd
	procUses []procUse // procfs paths naming a process, checked by Finish
	refused  []error   // what Finish found cr cannot save
	// ExtUnixSk: a unix datagram socket connected to a named socket
	// outside the tree is saved to be reconnected by path (--ext-unix-sk).
	ExtUnixSk bool
	inflight  []int // cr's copies of descriptors in flight (addInFlight), closed by Finish
	// TCP holds the collection's TCP sockets (tcp.go): the options the
	// dump asks for and cr's copies of the sockets it read.
	TCP *TCPDump

	// FileLocks saves the file locks the processes and descriptions hold
	// (--file-locks: image.File.Locks) instead of refusing them.
	FileLocks bool
}

type ref struct{ pid, fd int }

// NewCollector starts an empty collection.
func NewCollector(allowTTY bool) *Collector {
	return &Collector{allowTTY: allowTTY, nextID: 1, owner: map[int]ref{}, byKey: map[[2]uint64][]int{}, procs: map[int][]image.Fd{}, TCP: &TCPDump{}}
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
		if id >= 0 && len(e.File.Locks) > 0 {
			c.mergeLocks(id, e.File.Locks)
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
				entries[i], errs[i] = readOne(pid, fdnums[i], c.allowTTY, c.GhostLimit, c.TCP, c.FileLocks)
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

// Finish completes the collection across every process read: the procfs
// paths (checkProcPaths), then each kind that resolves its descriptions
// together (Resolver, in registry order: pipe ends pairing and contents,
// socket peers and queues, epoll targets).
//
// Every description cr cannot save is reported, not only the first: the
// error then joins *UnsupportedError values (see IsRefusal); any other
// error is a failure to read the state.
func (c *Collector) Finish() error {
	c.refused = nil
	if err := c.checkProcPaths(); err != nil {
		return err
	}
	defer c.closeInFlight()
	if err := c.gather(); err != nil {
		return err
	}
	for _, k := range kinds {
		r, ok := k.(Resolver)
		if !ok {
			continue
		}
		var mine []*image.File
		for i := range c.Files {
			if c.Files[i].Type == k.Type() {
				mine = append(mine, &c.Files[i])
			}
		}
		if _, always := k.(resolvesEmpty); len(mine) == 0 && !always {
			continue
		}
		if err := r.Resolve(c, mine); err != nil {
			return err
		}
	}
	return errors.Join(c.refused...)
}

// Refuse records a description cr cannot save (an *UnsupportedError);
// Finish reports them all.
func (c *Collector) Refuse(err error) { c.refused = append(c.refused, err) }

// Fds returns the fd table read of pid.
func (c *Collector) Fds(pid int) []image.Fd { return c.procs[pid] }

// Owner returns a (pid, fd) that holds file id.
func (c *Collector) Owner(id int) (pid, fd int) {
	o := c.owner[id]
	return o.pid, o.fd
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

// readOne reads fd of pid: what every fd has (baseEntry), then what its
// kind adds (the first kind of the registry that recognises it).
func readOne(pid, fd int, allowTTY bool, ghostLimit int64, tcp *TCPDump, fileLocks bool) (Entry, error) {
	e := Entry{Fd: fd}
	link := fmt.Sprintf("/proc/%d/fd/%d", pid, fd)
	target, err := os.Readlink(link)
	if err != nil {
		return e, fmt.Errorf("fd %d: %w", fd, err)
	}
	p := &Probe{Pid: pid, Fd: fd, Link: link, Target: target, AllowTTY: allowTTY, GhostLimit: ghostLimit, TCP: tcp, FileLocks: fileLocks}
	if !p.IsPath() && !recognizedByLink(p) {
		if strings.HasPrefix(target, "anon_inode:") {
			return e, &UnsupportedError{Fd: fd, What: anonKind(target)}
		}
		return e, &UnsupportedError{Fd: fd, What: fmt.Sprintf("%q", target)}
	}
	if e, err = baseEntry(p); err != nil {
		return e, err
	}
	if p.IsPath() {
		e.File.Ident.Proc = procPathOf(link, target)
		p.Ident.Proc = e.File.Ident.Proc
	}
	k := recognize(p)
	if k == nil {
		return e, &UnsupportedError{Fd: fd, What: fmt.Sprintf("an unsupported kind of file (%s, mode %o)", target, p.Ident.Mode)}
	}
	e.File.Type = k.Type()
	if err := k.Dump(p, &e.File); err != nil {
		return e, err
	}
	if p.FileLocks {
		if err := dumpLocks(p, &e.File); err != nil {
			return e, err
		}
	}
	return e, nil
}

// recognizedByLink tells whether a kind recognises an fd from its link text
// alone ("pipe:[INO]", "anon_inode:[eventfd]", ...), before anything else is
// read of it.
func recognizedByLink(p *Probe) bool {
	return recognize(p) != nil
}

// baseEntry reads what every fd has: the identity of its file and, from
// /proc/PID/fdinfo, its offset, flags (FD_CLOEXEC apart) and mount. It
// keeps the fdinfo text in p for what is particular to its kind of file.
func baseEntry(p *Probe) (Entry, error) {
	e := Entry{Fd: p.Fd}
	id, err := memdump.Identify(p.Link, p.Target)
	if err != nil {
		return e, fmt.Errorf("fd %d: %w", p.Fd, err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", p.Pid, p.Fd))
	if err != nil {
		return e, fmt.Errorf("fd %d: %w", p.Fd, err)
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
	p.Info, p.Flags, p.Ident = string(b), e.File.Flags, id
	if locks := lockLines(string(b)); len(locks) > 0 && !p.FileLocks {
		return e, lockError(p.Fd, p.Target, locks)
	}
	return e, nil
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
