package files

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/inet"
	"github.com/cr-tools/cr/pkg/netlock"
	"github.com/cr-tools/cr/pkg/sockdiag"
	"golang.org/x/sys/unix"
)

// tcpSocket: a TCP socket, AF_INET or AF_INET6 ("socket:[INO]" that inet
// sock_diag lists), record image.InetSocket (type image.FileInet). A
// listener or, with --tcp-established, an established connection; the work
// is pkg/inet's (TCP repair), on cr's own copy of the fd (pidfd_getfd).
// Anything else inet (UDP, raw, an unbound TCP socket, which sock_diag
// does not list) is left to the kinds after it. One socket held by several
// processes (nginx's master and workers) is one description: the
// collector finds the sharing (kcmp), the socket is read once, made once
// at restore and passed to each process.
//
// The lifecycle of an established connection (docs/DESIGN.md, "TCP
// sockets"): the dump takes the network lock (pkg/netlock) over the
// tree's connections right after the freeze (TCPDump.Connections), before
// any socket is read; Dump puts each in repair mode and keeps cr's copy.
// After a committed dump that kills the tree, TCPDump.Release closes the
// copies silently and the lock stays, named in the image; after a failed
// or interrupted dump, or --leave-running, TCPDump.Resume turns repair off
// and the dump removes the lock. Restore (Open) rebuilds each connection
// under the lock; Opener.NetworkUnlock removes it once every process is
// built. A restore that fails before that closes its sockets in repair
// mode (silently: no FIN, no reset, no orphan holding the 4-tuple) and
// keeps the lock, so that the image can be restored again.
type tcpSocket struct{}

func (tcpSocket) Type() string { return image.FileInet }

// socketIno parses "socket:[INO]".
func socketIno(target string) (uint64, bool) {
	s, ok := strings.CutPrefix(target, "socket:[")
	if !ok || !strings.HasSuffix(s, "]") {
		return 0, false
	}
	ino, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64)
	return ino, err == nil
}

func (tcpSocket) Recognize(p *Probe) bool {
	ino, ok := socketIno(p.Target)
	if !ok || p.TCP == nil {
		return false
	}
	p.TCP.mu.Lock()
	defer p.TCP.mu.Unlock()
	tab, err := p.TCP.table()
	if err != nil {
		return false // the unix socket kind reports the socket
	}
	_, ok = tab[ino]
	return ok
}

// TCPDump is what one collection knows of TCP sockets: the options of the
// dump, the one sock_diag table of TCP sockets it reads, and cr's copies
// of the sockets read (kept until Release or Resume). Safe for concurrent
// use by the collector's readers.
type TCPDump struct {
	// Established saves established connections (--tcp-established);
	// without it one is refused, naming it and the option.
	Established bool
	// SkipInFlight leaves behind the connections waiting in a listener's
	// accept queue (--skip-in-flight) instead of refusing the listener.
	SkipInFlight bool
	// CheckOnly: the pre-flight (cr check -t). Nothing is read through
	// repair mode, no copy is kept, no lock is needed.
	CheckOnly bool

	mu    sync.Mutex
	diag  map[uint64]sockdiag.InetSock
	socks map[uint64]*tcpSock // by socket inode
	order []uint64            // inodes in the order read
}

// tcpSock is one socket read: cr's copy (-1 once closed or when only
// checking), its record, what refused it, or the failure to read it. done
// is closed once the read is over: another fd of the same socket, read by
// another of the collector's readers, waits for it.
type tcpSock struct {
	fd   int
	rec  *image.InetSocket
	err  *UnsupportedError
	fail error
	done chan struct{}
}

// table returns the sock_diag table of TCP sockets, read once (d.mu held).
// It holds what Dump needs (states, addresses, queues, shutdown), not the
// extensions that make a table of thousands of sockets slow to read
// (sockdiag.BriefTCP).
func (d *TCPDump) table() (map[uint64]sockdiag.InetSock, error) {
	if d.diag == nil {
		tab, err := sockdiag.BriefTCP()
		if err != nil {
			return nil, err
		}
		d.diag = tab
	}
	return d.diag, nil
}

// Connections reads the table of TCP sockets (the collection's one
// sock_diag dump) and returns the established connections among the
// sockets that the processes pids hold (their /proc/PID/fd links): what
// the network lock must drop. The dump calls it right after the freeze,
// before any socket is read. A connection held by several processes is
// listed once.
func (d *TCPDump) Connections(pids []int) ([]netlock.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.diag = nil
	tab, err := d.table()
	if err != nil {
		return nil, err
	}
	seen := map[uint64]bool{}
	var out []netlock.Conn
	for _, pid := range pids {
		dir := fmt.Sprintf("/proc/%d/fd", pid)
		ents, err := os.ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("pid %d: list fds: %w", pid, err)
		}
		for _, e := range ents {
			target, err := os.Readlink(dir + "/" + e.Name())
			if err != nil {
				continue // closed meanwhile (the task is frozen: not by it)
			}
			ino, ok := socketIno(target)
			if !ok || seen[ino] {
				continue
			}
			seen[ino] = true
			if s, ok := tab[ino]; ok && s.State == sockdiag.TCPEstablished {
				out = append(out, netlock.Conn{Local: s.Local, Remote: s.Remote})
			}
		}
	}
	return out, nil
}

// Dump reads the socket, or takes what another fd of the same socket read.
// The reads of different sockets run at the same time (the collector reads
// a large fd table with one reader per CPU); d.mu guards only the maps.
func (tcpSocket) Dump(p *Probe, f *image.File) error {
	d := p.TCP
	ino, _ := socketIno(p.Target)
	d.mu.Lock()
	if s, ok := d.socks[ino]; ok { // held by another fd, read before or now
		d.mu.Unlock()
		<-s.done
		if s.fail != nil {
			return s.fail // names the fd that read it
		}
		if s.err != nil {
			e := *s.err
			e.Fd = p.Fd
			return &e
		}
		f.Inet = s.rec
		return nil
	}
	tab, err := d.table()
	if err != nil {
		d.mu.Unlock()
		return fmt.Errorf("fd %d: %w", p.Fd, err)
	}
	diag, listed := tab[ino]
	if d.socks == nil {
		d.socks = map[uint64]*tcpSock{}
	}
	s := &tcpSock{fd: -1, done: make(chan struct{})}
	d.socks[ino] = s
	d.order = append(d.order, ino)
	d.mu.Unlock()

	if !listed {
		s.fail = fmt.Errorf("fd %d: TCP socket %d no longer listed by sock_diag", p.Fd, ino)
	} else {
		s.fail = d.read(p, &diag, s)
	}
	close(s.done)
	if s.fail != nil {
		return s.fail
	}
	if s.err != nil {
		return s.err
	}
	f.Inet = s.rec
	return nil
}

// read reads one socket into s (without d.mu: s is not shared until
// s.done is closed): a refusal goes to s.err, a failure to read it is the
// error.
func (d *TCPDump) read(p *Probe, diag *sockdiag.InetSock, s *tcpSock) error {
	if diag.State == sockdiag.TCPEstablished && !d.Established {
		s.err = &UnsupportedError{Fd: p.Fd, What: fmt.Sprintf("TCP connection %v -> %v", diag.Local, diag.Remote),
			Why: "is established", Option: "--tcp-established", Does: "to save it (TCP repair)"}
		return nil
	}
	fd, err := CopyFd(p.Pid, p.Fd)
	if err != nil {
		return err
	}
	rec, err := inet.Dump(fd, diag, inet.DumpOptions{SkipInFlight: d.SkipInFlight, CheckOnly: d.CheckOnly})
	if err != nil {
		unix.Close(fd) // Dump left it as it was
		var r *inet.RefusedError
		if errors.As(err, &r) {
			s.err = &UnsupportedError{Fd: p.Fd, What: r.Socket, Why: r.Reason, Option: r.Option, Does: r.Does}
			return nil
		}
		return fmt.Errorf("fd %d: %w", p.Fd, err)
	}
	if d.CheckOnly {
		unix.Close(fd)
	} else {
		s.fd = fd
	}
	s.rec = rec
	return nil
}

// Resume lets the connections read go on (a dump that failed, was
// interrupted, or leaves the tree running): each leaves repair mode
// (inet.Resume) and cr's copies are closed. Remove the network lock only
// after. Every socket is tried; the first error is returned.
func (d *TCPDump) Resume() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var first error
	for _, ino := range d.order {
		s := d.socks[ino]
		if s.fd < 0 {
			continue
		}
		if err := inet.Resume(s.fd, s.rec); err != nil && first == nil {
			first = err
		}
		unix.Close(s.fd)
		s.fd = -1
	}
	return first
}

// Release closes cr's copies once the tree is killed after a committed
// dump: the connections, still in repair mode, go without a FIN or a reset
// (inet.Release). The network lock stays until the restore.
func (d *TCPDump) Release() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var first error
	for _, ino := range d.order {
		s := d.socks[ino]
		if s.fd < 0 {
			continue
		}
		if err := inet.Release(s.fd, s.rec); err != nil && first == nil {
			first = err
		}
		s.fd = -1
	}
	return first
}

// Count counts the listeners and established connections read.
func (d *TCPDump) Count() (listeners, conns int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range d.socks {
		switch {
		case s.rec == nil:
		case s.rec.State == image.TCPEstablished:
			conns++
		default:
			listeners++
		}
	}
	return listeners, conns
}

func (tcpSocket) Validate(_ *image.Checkpoint, f *image.File) error {
	if err := need(f.Inet != nil, f, "socket record"); err != nil {
		return err
	}
	return f.Inet.Validate()
}

// tcpRestore is what one restore's TCP connections share: cr's fds of the
// connections made (put back in repair mode if the restore fails), and
// whether they were handed over (NetworkUnlock).
type tcpRestore struct {
	conns    []int
	released bool
}

// Open makes the socket: a listener bound and listening, a connection
// rebuilt by TCP repair (inet.Restore) under the network lock, or, with
// Opener.TCPClose, a closed socket (closedTCP).
func (k tcpSocket) Open(o *Opener, f *image.File) (int, error) {
	s := f.Inet
	var fd int
	var err error
	if s.State == image.TCPEstablished && o.TCPClose {
		fd, err = closedTCP(s)
	} else {
		fd, err = inet.Restore(s)
	}
	if err != nil {
		return 0, err
	}
	if err := SetFlags(fd, f.Flags); err != nil {
		unix.Close(fd)
		return 0, err
	}
	if s.State == image.TCPEstablished && !o.TCPClose {
		t := stateOf[tcpRestore](o, k)
		if t.conns == nil {
			o.AtClose(func() {
				if t.released {
					return
				}
				// The restore failed: its processes are gone; cr's copy
				// is the last, and closes in repair mode, sending nothing.
				for _, c := range t.conns {
					unix.SetsockoptInt(c, unix.SOL_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_ON)
				}
			})
		}
		t.conns = append(t.conns, fd)
	}
	return fd, nil
}

// closedTCP is an established connection restored closed (--tcp-close,
// CRIU's name, for a restore where the peer is gone): a new TCP socket of
// the connection's family, never connected (state CLOSE). The program
// finds its connection ended: poll reports POLLHUP, read fails with
// ENOTCONN, write with EPIPE (and SIGPIPE); it closes it as it would a
// connection its peer reset. Nothing of the connection's queues is kept.
func closedTCP(s *image.InetSocket) (int, error) {
	fd, err := unix.Socket(s.Family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return -1, fmt.Errorf("TCP connection %s -> %s (--tcp-close): socket: %w", s.Local, s.Remote, err)
	}
	return fd, nil
}

// NetworkUnlock removes the image's network lock (Inventory.NetLock) once
// every process is built and its sockets are in place: restore calls it
// last, just before it lets the processes go. From then on a failed
// restore no longer puts the connections back in repair mode. A lock
// already gone (cr network-unlock) is noted, not an error.
func (o *Opener) NetworkUnlock() error {
	if name := o.Ck.Inventory.NetLock; name != "" {
		if err := netlock.Unlock(name); errors.Is(err, netlock.ErrNoLock) {
			o.Env.Logf("network lock %s was removed already", name)
		} else if err != nil {
			return err
		}
	}
	stateOf[tcpRestore](o, tcpSocket{}).released = true
	return nil
}

func (tcpSocket) Describe(f *image.File) string {
	if f.Inet == nil {
		return f.Ident.Path
	}
	return f.Inet.Describe()
}
