package files

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/sockdiag"
	"golang.org/x/sys/unix"
)

// unixSocket: an AF_UNIX socket ("socket:[INO]"), record image.UnixSocket:
// socketpair ends and named sockets (paths and abstract names) of every
// type (stream, datagram, seqpacket), bound, listening or connected. What
// the socket is comes from sock_diag (pkg/sockdiag, unix_diag: name, VFS,
// peer, pending connections, shutdown) at the end of the collection
// (Resolve). Before that, Gather reads every socket's receive queue
// without taking it (MSG_PEEK with SO_PEEK_OFF) with the descriptors its
// SCM_RIGHTS messages carry: cr receives copies of them and collects them
// as descriptions held by no process (Collector.addInFlight), which are
// saved like any file. CRIU's criu/sk-unix.c does the same.
//
// An end whose peer no process of the tree holds: a datagram socket
// connected to a named socket outside (syslog's /dev/log) is reconnected
// by path with Collector.ExtUnixSk (--ext-unix-sk) and refused without;
// any other such end is external ("socket:[INO]", given back by the
// caller at restore with --inherit-fd), as reconnecting a stream would
// start a new conversation in the middle of a protocol.
//
// Restore (unixsock_open.go) makes socketpairs for unnamed pairs, binds
// named sockets (the socket file checked first: Check), listens, rebuilds
// connections accepted from a listener of the image by connecting to it,
// and the pending ones with a client whose other end stays in the accept
// queue; once every process is built it refills the queues with their
// descriptors, connects datagram sockets and shuts down what was shut.
type unixSocket struct{}

func (unixSocket) Type() string { return image.FileUnix }

func (unixSocket) Recognize(p *Probe) bool {
	return strings.HasPrefix(p.Target, "socket:") && sockDomain(p) == unix.AF_UNIX
}

func (unixSocket) Dump(p *Probe, f *image.File) error {
	f.Unix = &image.UnixSocket{Ino: p.Ident.Ino} // completed with sock_diag in Resolve
	return nil
}

func (unixSocket) Validate(_ *image.Checkpoint, f *image.File) error {
	if err := need(f.Unix != nil, f, "socket record"); err != nil {
		return err
	}
	u := f.Unix
	if f.External == "" && u.Type != unix.SOCK_STREAM && u.Type != unix.SOCK_DGRAM && u.Type != unix.SOCK_SEQPACKET {
		return fmt.Errorf("a unix socket of type %d", u.Type)
	}
	if u.Shutdown < 0 || u.Shutdown > 3 {
		return fmt.Errorf("unix socket shutdown mask %d", u.Shutdown)
	}
	if len(u.QueueFds) > len(u.Queue) {
		return fmt.Errorf("unix socket with descriptors for %d of %d messages", len(u.QueueFds), len(u.Queue))
	}
	if u.File != nil && !filepath.IsAbs(u.File.Path) {
		return fmt.Errorf("unix socket file %q is not absolute", u.File.Path)
	}
	return nil
}

func (unixSocket) Describe(f *image.File) string {
	u := f.Unix
	if u == nil {
		return f.Ident.Path
	}
	s := fmt.Sprintf("unix %s socket:[%d]", unixTypeName(u.Type), u.Ino)
	if u.Name != "" {
		s += " " + printName(u.Name)
	}
	switch {
	case u.State == sockdiag.TCPListen:
		s += fmt.Sprintf(" listening, %d pending", len(u.Pending))
	case u.ExtPath != "":
		s += " connected to " + printName(u.ExtPath) + " (outside, --ext-unix-sk)"
	case f.External != "" && u.PeerName != "":
		s += " connected to " + printName(u.PeerName) + " (outside the tree)"
	}
	if n := len(u.Queue); n > 0 {
		s += fmt.Sprintf(", %d queued", n)
	}
	return s
}

func unixTypeName(t int) string {
	switch t {
	case unix.SOCK_STREAM:
		return "stream"
	case unix.SOCK_DGRAM:
		return "dgram"
	case unix.SOCK_SEQPACKET:
		return "seqpacket"
	}
	return fmt.Sprintf("type-%d", t)
}

// printName shows a unix address: an abstract name as "@name".
func printName(n string) string {
	if strings.HasPrefix(n, "\x00") {
		return "@" + n[1:]
	}
	return n
}

// sockDomain is SO_DOMAIN of the socket fd p (-1 if it cannot be read).
func sockDomain(p *Probe) int {
	d, _, _ := sockKind(p)
	return d
}

// sockKind reads SO_DOMAIN, SO_TYPE and SO_PROTOCOL of the socket fd p,
// on a copy of it (pidfd_getfd); -1s if it cannot be read.
func sockKind(p *Probe) (domain, typ, proto int) {
	p.sockOnce.Do(func() {
		p.sock = [3]int{-1, -1, -1}
		s, err := CopyFd(p.Pid, p.Fd)
		if err != nil {
			return
		}
		defer unix.Close(s)
		for i, opt := range []int{unix.SO_DOMAIN, unix.SO_TYPE, unix.SO_PROTOCOL} {
			if v, err := unix.GetsockoptInt(s, unix.SOL_SOCKET, opt); err == nil {
				p.sock[i] = v
			}
		}
	})
	return p.sock[0], p.sock[1], p.sock[2]
}

// Resolve completes every unix socket from sock_diag: its type, state,
// name and socket file, peer (in the tree, outside it by path with
// --ext-unix-sk, else external), pending connections and options. The
// queues were read by Gather.
func (unixSocket) Resolve(c *Collector, files []*image.File) error {
	socks, err := sockdiag.Unix()
	if err != nil {
		return err
	}
	inTree := map[uint64]*image.File{}
	for _, f := range files {
		inTree[f.Unix.Ino] = f
	}
	listeners := map[string]uint64{} // name -> inode of a listener of the tree
	for _, f := range files {
		if s, ok := socks[f.Unix.Ino]; ok && s.State == sockdiag.TCPListen && s.Name != "" {
			listeners[s.Name] = f.Unix.Ino
		}
	}
	for _, f := range files {
		pid, fd := c.Owner(f.ID)
		u := f.Unix
		s, ok := socks[u.Ino]
		if !ok {
			return fmt.Errorf("fd %d of pid %d: socket:[%d] is not in sock_diag's list", fd, pid, u.Ino)
		}
		if s.Type != unix.SOCK_STREAM && s.Type != unix.SOCK_DGRAM && s.Type != unix.SOCK_SEQPACKET {
			c.Refuse(&UnsupportedError{Pid: pid, Fd: fd, What: fmt.Sprintf("a unix socket of type %d", s.Type)})
			continue
		}
		u.Type, u.State, u.Shutdown, u.Name = int(s.Type), int(s.State), int(s.Shutdown), s.Name
		peer := uint64(s.Peer)
		if peer == 0 && s.State == sockdiag.TCPEstablished && s.Type != unix.SOCK_DGRAM {
			// A connection waiting in a listener's accept queue has no
			// peer inode yet: the listener's list of pending clients
			// tells. One outside the tree makes the socket external.
			if l, ok := pendingIn(socks, s.Ino); ok && inTree[uint64(l.Ino)] == nil {
				u.Type, u.State, u.PeerName = int(s.Type), int(s.State), l.Name
				f.External = fmt.Sprintf("socket:[%d]", u.Ino)
				u.Queue, u.QueueFds = nil, nil
				continue
			}
		}
		if peer != 0 && inTree[peer] == nil {
			ps := socks[peer]
			u.PeerName = ps.Name
			if s.Type == unix.SOCK_DGRAM && ps.Name != "" && !(ps.Peer == s.Ino) {
				// Connected to a named socket outside (syslog's /dev/log).
				if !c.ExtUnixSk {
					c.Refuse(&UnsupportedError{Pid: pid, Fd: fd, What: fmt.Sprintf("a unix datagram socket connected to %s outside the dumped processes", printName(ps.Name)),
						Option: "--ext-unix-sk", Does: "to reconnect it by path at restore"})
					continue
				}
				u.ExtPath = ps.Name
				peer = 0
			} else {
				// A stream (or a datagram pair) with its other end outside:
				// the caller gives it back at restore (--inherit-fd); what
				// sits in its queue stays with the old socket.
				u.Peer = peer
				u.Queue, u.QueueFds = nil, nil
				f.External = fmt.Sprintf("socket:[%d]", u.Ino)
				continue
			}
		}
		u.Peer = peer
		if s.State == sockdiag.TCPListen {
			if s.HasRQLen {
				u.Backlog = int(s.WQueue)
			}
			var sent []string
			for _, ic := range s.Icons {
				u.Pending = append(u.Pending, uint64(ic))
				// What a pending connection's client sent sits in the
				// server end, which has no fd nor inode until accept():
				// it cannot be read without accepting. The client's
				// UNIX_DIAG_RQLEN wqueue (sk_wmem_alloc - 1) counts it.
				// The connection request itself is charged to the client
				// too (pendingBaseline).
				if cl, ok := socks[uint64(ic)]; ok && cl.HasRQLen {
					if base, err := pendingBaseline(); err == nil && cl.WQueue > base {
						sent = append(sent, fmt.Sprintf("socket:[%d] (%d bytes of buffers)", ic, cl.WQueue-base))
					}
				}
			}
			if len(sent) > 0 {
				c.Refuse(&UnsupportedError{Pid: pid, Fd: fd, What: fmt.Sprintf("a unix socket listening at %q whose accept queue holds connections whose clients sent data already (%s): cr cannot read it without accepting them (let the program accept them first)", s.Name, strings.Join(sent, ", "))})
				continue
			}
		} else if s.Name != "" && s.Type != unix.SOCK_DGRAM {
			if l, ok := listeners[s.Name]; ok && l != u.Ino && sameVFS(socks[l].VFS, s.VFS) {
				u.Listener = l // accepted from it (it shares the listener's name)
			}
		}
		if s.Name != "" && s.Name[0] != 0 && u.Listener == 0 {
			if u.File, err = socketFile(pid, s); err != nil {
				c.Refuse(&UnsupportedError{Pid: pid, Fd: fd, What: fmt.Sprintf("a unix socket bound to %s: %v", s.Name, err)})
				continue
			}
		}
		if len(u.Queue) > 0 && u.Type == unix.SOCK_DGRAM && u.Name == "" && u.Peer == 0 && u.ExtPath == "" {
			c.Refuse(&UnsupportedError{Pid: pid, Fd: fd, What: "an unnamed unix datagram socket with queued messages and no peer"})
			continue
		}
		if cp, err := CopyFd(pid, fd); err == nil {
			u.SndBuf, _ = unix.GetsockoptInt(cp, unix.SOL_SOCKET, unix.SO_SNDBUF)
			u.RcvBuf, _ = unix.GetsockoptInt(cp, unix.SOL_SOCKET, unix.SO_RCVBUF)
			v, _ := unix.GetsockoptInt(cp, unix.SOL_SOCKET, unix.SO_PASSCRED)
			u.PassCred = v != 0
			v, _ = unix.GetsockoptInt(cp, unix.SOL_SOCKET, unix.SO_PASSSEC)
			u.PassSec = v != 0
			if v, err := unix.GetsockoptInt(cp, unix.SOL_SOCKET, unix.SO_PEEK_OFF); err == nil {
				u.PeekOff = v + 1
			}
			unix.Close(cp)
		}
	}
	return nil
}

// socketFile finds the file a unix socket bound to a path made: at its
// name, or, if the name now holds something else or nothing (the file was
// renamed: haproxy binds admin.sock.PID.tmp and renames it), in the
// directory of the name by device and inode. A relative name is taken
// from the process's cwd.
func socketFile(pid int, s sockdiag.UnixSock) (*image.UnixSocketFile, error) {
	if s.VFS == nil {
		return nil, errors.New("sock_diag gives no file")
	}
	dev := uint64(unix.Mkdev(s.VFS.Dev>>20, s.VFS.Dev&0xfffff))
	ino := uint64(s.VFS.Ino)
	name := s.Name
	if !filepath.IsAbs(name) {
		cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		if err != nil {
			return nil, err
		}
		name = filepath.Join(cwd, name)
	}
	found := func(path string, st *unix.Stat_t) *image.UnixSocketFile {
		return &image.UnixSocketFile{Path: path, Dev: dev, Ino: ino, Mode: st.Mode & 07777, UID: st.Uid, GID: st.Gid}
	}
	var st unix.Stat_t
	if err := unix.Lstat(name, &st); err == nil && st.Ino == ino && uint64(st.Dev) == dev {
		return found(name, &st), nil
	}
	dir := filepath.Dir(name)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("its file is gone and %s cannot be read: %w", dir, err)
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if e.Type()&os.ModeSocket == 0 {
			continue
		}
		if err := unix.Lstat(p, &st); err == nil && st.Ino == ino && uint64(st.Dev) == dev {
			return found(p, &st), nil
		}
	}
	return nil, fmt.Errorf("its file (inode %d) is no longer in %s", ino, dir)
}

// Check looks at the path a named socket binds at: it must hold the
// dumped socket file (removed at restore) or nothing; anything else is
// refused, naming the path.
func (unixSocket) Check(env Env, f *image.File) error {
	if f.Unix == nil || f.Unix.File == nil {
		return nil
	}
	sf := f.Unix.File
	var st unix.Stat_t
	err := unix.Lstat(sf.Path, &st)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil
	case err != nil:
		return fmt.Errorf("unix socket file %s: %w", sf.Path, err)
	case st.Ino == sf.Ino && uint64(st.Dev) == sf.Dev && st.Mode&unix.S_IFMT == unix.S_IFSOCK:
		return nil
	}
	return fmt.Errorf("%s is in the way of the unix socket to bind there: it is not the dumped socket file (inode %d, now %d, mode %o); remove it to restore", sf.Path, sf.Ino, st.Ino, st.Mode)
}

func sameVFS(a, b *sockdiag.UnixVFS) bool {
	return a == nil && b == nil || a != nil && b != nil && *a == *b
}

// pendingIn finds the listener whose accept queue holds the connection of
// client ino.
func pendingIn(socks map[uint64]sockdiag.UnixSock, ino uint32) (sockdiag.UnixSock, bool) {
	for _, s := range socks {
		if s.State != sockdiag.TCPListen {
			continue
		}
		for _, ic := range s.Icons {
			if ic == ino {
				return s, true
			}
		}
	}
	return sockdiag.UnixSock{}, false
}

var pendingBase struct {
	once sync.Once
	n    uint32
	err  error
}

// pendingBaseline is the wqueue (UNIX_DIAG_RQLEN: sk_wmem_alloc - 1) of a
// unix stream client whose connection waits in accept() and that has sent
// nothing: the connection request's skb (net/unix/af_unix.c,
// unix_stream_connect) is charged to the client. Measured once on a
// listener and client of cr's own, since an skb's truesize depends on the
// kernel's build.
func pendingBaseline() (uint32, error) {
	b := &pendingBase
	b.once.Do(func() {
		b.err = func() error {
			l, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(l)
			addr := &unix.SockaddrUnix{Name: fmt.Sprintf("@cr-pending-%d", os.Getpid())}
			if err := unix.Bind(l, addr); err != nil {
				return err
			}
			if err := unix.Listen(l, 1); err != nil {
				return err
			}
			c, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(c)
			if err := unix.Connect(c, addr); err != nil {
				return err
			}
			var st unix.Stat_t
			if err := unix.Fstat(c, &st); err != nil {
				return err
			}
			socks, err := sockdiag.Unix()
			if err != nil {
				return err
			}
			s, ok := socks[st.Ino]
			if !ok || !s.HasRQLen {
				return fmt.Errorf("sock_diag does not list cr's own unix socket")
			}
			b.n = s.WQueue
			return nil
		}()
	})
	return b.n, b.err
}
