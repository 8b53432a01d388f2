package files

import (
	"errors"
	"fmt"

	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/sockdiag"
	"golang.org/x/sys/unix"
)

// sockState is what one restore's unix sockets share.
type sockState struct {
	socks       map[uint64]int // unix socket inode -> cr's fd of that socket
	closedPeers map[uint64]int // socket inode -> the other end, closed with the Opener (the peer was closed)
	byIno       map[uint64]*image.File
	made        []*image.File  // in the order made: queues to refill, options to set
	connects    []func() error // datagram sockets connected once the queues are in
}

func (k unixSocket) state(o *Opener) *sockState {
	t := stateOf[sockState](o, k)
	if t.socks == nil {
		t.socks, t.closedPeers, t.byIno = map[uint64]int{}, map[uint64]int{}, map[uint64]*image.File{}
		for i := range o.Ck.Files {
			if f := &o.Ck.Files[i]; f.Type == image.FileUnix && f.Unix != nil {
				t.byIno[f.Unix.Ino] = f
			}
		}
		o.Late(func() error { return t.finish(o) })
	}
	return t
}

func (k unixSocket) Open(o *Opener, f *image.File) (int, error) {
	t := k.state(o)
	if _, ok := t.socks[f.Unix.Ino]; !ok {
		if err := k.make(o, t, f); err != nil {
			return 0, err
		}
	}
	me, ok := t.socks[f.Unix.Ino]
	if !ok {
		return 0, fmt.Errorf("image is inconsistent: socket:[%d] was not made with its listener", f.Unix.Ino)
	}
	fd, err := unix.FcntlInt(uintptr(me), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	if err := SetFlags(fd, f.Flags); err != nil {
		unix.Close(fd)
		return 0, err
	}
	return fd, nil
}

// make creates the socket of f (and what comes with it: the other end of
// a pair, the connections of a listener).
func (k unixSocket) make(o *Opener, t *sockState, f *image.File) error {
	u := f.Unix
	peer := t.byIno[u.Peer]
	switch {
	case u.State == sockdiag.TCPListen:
		return k.makeListener(o, t, f)
	case u.Listener != 0 && t.byIno[u.Listener] != nil:
		_, err := o.Open(t.byIno[u.Listener])
		return err
	case peer != nil && peer.Unix.Listener != 0 && t.byIno[peer.Unix.Listener] != nil:
		_, err := o.Open(t.byIno[peer.Unix.Listener])
		return err
	}
	if l := t.pendingAt(u.Ino); l != nil {
		_, err := o.Open(l)
		return err
	}
	// A datagram socket is made alone but for an unnamed pair (a
	// socketpair, its peer perhaps closed): connecting to a datagram
	// socket marks both connected (unix_dgram_connect), so a named one
	// that others connect to reads as connected without a peer.
	single := u.ExtPath != "" || u.State == sockdiag.TCPClose && u.Peer == 0 ||
		u.Type == unix.SOCK_DGRAM && u.State != 0 && (u.Name != "" || peer != nil && (peer.Unix.Peer != u.Ino || peer.Unix.Name != ""))
	if single {
		s, err := t.newSocket(o, u.Type)
		if err != nil {
			return err
		}
		if err := bindName(o, s, u); err != nil {
			return err
		}
		t.socks[u.Ino] = s
		t.made = append(t.made, f)
		switch {
		case u.ExtPath != "":
			t.connects = append(t.connects, func() error { return connectTo(s, u.ExtPath, "outside peer") })
		case peer != nil:
			t.connects = append(t.connects, func() error {
				if _, err := o.Open(peer); err != nil {
					return err
				}
				return connectTo(s, addrOf(peer.Unix), "peer")
			})
		}
		return nil
	}
	// A pair (socketpair; the peer may have been closed).
	sp, err := unix.Socketpair(unix.AF_UNIX, u.Type|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socketpair: %w", err)
	}
	o.Keep(sp[0])
	o.Keep(sp[1])
	t.socks[u.Ino] = sp[0]
	t.made = append(t.made, f)
	if u.Peer != 0 {
		t.socks[u.Peer] = sp[1]
		if peer != nil {
			t.made = append(t.made, peer)
		}
	} else {
		t.closedPeers[u.Ino] = sp[1]
	}
	return nil
}

// pendingAt returns the listener whose accept queue holds the connection
// of client socket ino.
func (t *sockState) pendingAt(ino uint64) *image.File {
	for _, f := range t.byIno {
		for _, p := range f.Unix.Pending {
			if p == ino && f.Unix.State == sockdiag.TCPListen {
				return f
			}
		}
	}
	return nil
}

func (t *sockState) newSocket(o *Opener, typ int) (int, error) {
	s, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("unix socket: %w", err)
	}
	o.Keep(s)
	return s, nil
}

// makeListener binds and listens, then rebuilds the connections accepted
// from it that the image holds (a client connected, the server end
// accepted), then the ones waiting in its accept queue, oldest first: a
// client connects for each; the image's own client socket when it has it,
// else one that is closed with the Opener (the connection then reads as
// ended, as it would have after the client went away).
func (k unixSocket) makeListener(o *Opener, t *sockState, f *image.File) error {
	u := f.Unix
	l, err := t.newSocket(o, u.Type)
	if err != nil {
		return err
	}
	if err := bindName(o, l, u); err != nil {
		return err
	}
	backlog := max(u.Backlog, len(u.Pending)+1)
	if err := unix.Listen(l, backlog); err != nil {
		return fmt.Errorf("listen on %s: %w", printName(u.Name), err)
	}
	t.socks[u.Ino] = l
	t.made = append(t.made, f)
	addr := addrOf(u)
	client := func(ino uint64) (int, error) {
		c, err := t.newSocket(o, u.Type)
		if err != nil {
			return -1, err
		}
		if cf := t.byIno[ino]; cf != nil && cf.Unix.Name != "" {
			if err := bindName(o, c, cf.Unix); err != nil {
				return -1, err
			}
		}
		if err := connectTo(c, addr, "listener"); err != nil {
			return -1, err
		}
		return c, nil
	}
	for i := range o.Ck.Files {
		g := &o.Ck.Files[i]
		if g.Type != image.FileUnix || g.Unix == nil || g.Unix.Listener != u.Ino || g.External != "" {
			continue
		}
		c, err := client(g.Unix.Peer)
		if err != nil {
			return err
		}
		srv, _, err := unix.Accept4(l, unix.SOCK_CLOEXEC)
		if err != nil {
			return fmt.Errorf("accept on %s: %w", printName(u.Name), err)
		}
		o.Keep(srv)
		t.socks[g.Unix.Ino] = srv
		t.made = append(t.made, g)
		if p := t.byIno[g.Unix.Peer]; p != nil && g.Unix.Peer != 0 {
			t.socks[g.Unix.Peer] = c
			t.made = append(t.made, p)
		} else {
			t.closedPeers[g.Unix.Ino] = c
		}
	}
	for _, ino := range u.Pending {
		c, err := client(ino)
		if err != nil {
			return err
		}
		if cf := t.byIno[ino]; cf != nil {
			t.socks[ino] = c
			t.made = append(t.made, cf)
		}
	}
	return nil
}

// addrOf is the address to reach a named socket at now.
func addrOf(u *image.UnixSocket) string {
	if u.File != nil {
		return u.File.Path
	}
	return u.Name
}

func connectTo(s int, addr, what string) error {
	if addr == "" {
		return fmt.Errorf("image is inconsistent: connect a unix socket to an unnamed %s", what)
	}
	if err := unix.Connect(s, &unix.SockaddrUnix{Name: addr}); err != nil {
		return fmt.Errorf("connect unix socket to %s %s: %w", what, printName(addr), err)
	}
	return nil
}

// bindName binds s to the name of u, if it has one. A path: its file, if
// the dumped one is still there, is removed first (Check refused anything
// else before the restore began); the new file gets the dumped mode and
// owner. A socket whose file was renamed after the bind is bound at the
// name the file has now.
func bindName(o *Opener, s int, u *image.UnixSocket) error {
	if u.Name == "" {
		return nil
	}
	name := u.Name
	sf := u.File
	if sf != nil {
		name = sf.Path
		var st unix.Stat_t
		if err := unix.Lstat(name, &st); err == nil {
			if st.Ino != sf.Ino || uint64(st.Dev) != sf.Dev {
				return fmt.Errorf("%s is in the way of the unix socket to bind there: it is not the dumped socket file", name)
			}
			if err := unix.Unlink(name); err != nil {
				return fmt.Errorf("remove the old socket file %s: %w", name, err)
			}
		}
		if name != u.Name {
			o.Env.Logf("unix socket bound at %s at the dump is bound at %s, the name its file has now", u.Name, name)
		}
	}
	if err := unix.Bind(s, &unix.SockaddrUnix{Name: name}); err != nil {
		return fmt.Errorf("bind unix socket to %s: %w", printName(name), err)
	}
	if sf != nil {
		if err := unix.Chmod(name, sf.Mode); err != nil {
			return fmt.Errorf("unix socket file %s: %w", name, err)
		}
		if err := unix.Lchown(name, int(sf.UID), int(sf.GID)); err != nil {
			return fmt.Errorf("unix socket file %s: %w", name, err)
		}
	}
	return nil
}

// finish runs once every process is built: it refills every queue (with
// the descriptors in flight, opened now), then connects the datagram
// sockets, sets the options and shuts down what was shut down.
func (t *sockState) finish(o *Opener) error {
	for i := 0; i < len(t.made); i++ { // filling may open sockets in flight
		if err := t.fill(o, t.made[i]); err != nil {
			return err
		}
	}
	for _, c := range t.connects {
		if err := c(); err != nil {
			return err
		}
	}
	for _, f := range t.made {
		u := f.Unix
		me := t.socks[u.Ino]
		// The buffer sizes the process had (the kernel doubles what is set).
		if u.SndBuf > 0 {
			unix.SetsockoptInt(me, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, u.SndBuf/2)
		}
		if u.RcvBuf > 0 {
			unix.SetsockoptInt(me, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, u.RcvBuf/2)
		}
		for _, opt := range []struct {
			name string
			opt  int
			on   bool
		}{{"SO_PASSCRED", unix.SO_PASSCRED, u.PassCred}, {"SO_PASSSEC", unix.SO_PASSSEC, u.PassSec}} {
			if opt.on {
				if err := unix.SetsockoptInt(me, unix.SOL_SOCKET, opt.opt, 1); err != nil {
					return fmt.Errorf("unix socket:[%d]: setsockopt %s: %w", u.Ino, opt.name, err)
				}
			}
		}
		if u.PeekOff > 0 {
			if err := unix.SetsockoptInt(me, unix.SOL_SOCKET, unix.SO_PEEK_OFF, u.PeekOff-1); err != nil {
				return fmt.Errorf("unix socket:[%d]: setsockopt SO_PEEK_OFF: %w", u.Ino, err)
			}
		}
	}
	for _, f := range t.made {
		u := f.Unix
		if u.Shutdown != 0 {
			how := map[int]int{1: unix.SHUT_RD, 2: unix.SHUT_WR, 3: unix.SHUT_RDWR}[u.Shutdown]
			if err := unix.Shutdown(t.socks[u.Ino], how); err != nil && !errors.Is(err, unix.ENOTCONN) {
				return fmt.Errorf("shutdown unix socket:[%d]: %w", u.Ino, err)
			}
		}
	}
	return nil
}

// fill queues the messages f had waiting again, with their descriptors:
// through its peer (a stream, a pair), else from a socket of cr sent to its
// name (datagrams; they then come from an unnamed sender).
func (t *sockState) fill(o *Opener, f *image.File) error {
	u := f.Unix
	if len(u.Queue) == 0 {
		return nil
	}
	me := t.socks[u.Ino]
	sender, ok := t.socks[u.Peer]
	if u.Peer == 0 {
		sender, ok = t.closedPeers[u.Ino]
	}
	var to unix.Sockaddr
	if u.Type == unix.SOCK_DGRAM && (!ok || t.byIno[u.Peer] != nil && t.byIno[u.Peer].Unix.Peer != u.Ino) {
		if u.Name == "" {
			o.Env.Logf("unix socket:[%d]: %d queued datagrams dropped (an unnamed socket cr cannot send to)", u.Ino, len(u.Queue))
			return nil
		}
		s, err := t.newSocket(o, unix.SOCK_DGRAM)
		if err != nil {
			return err
		}
		sender, ok, to = s, true, &unix.SockaddrUnix{Name: addrOf(u)}
	}
	if !ok {
		return fmt.Errorf("image is inconsistent: no peer for socket:[%d]", u.Ino)
	}
	// Let the queue in whatever the buffers' sizes are now; the sender's
	// buffer is put back right after.
	total := 0
	for _, m := range u.Queue {
		total += len(m) + 1024
	}
	if cur, err := unix.GetsockoptInt(sender, unix.SOL_SOCKET, unix.SO_SNDBUF); err == nil && cur < 2*total {
		unix.SetsockoptInt(sender, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 2*total)
		defer unix.SetsockoptInt(sender, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, cur/2) // the kernel doubles it
	}
	if cur, err := unix.GetsockoptInt(me, unix.SOL_SOCKET, unix.SO_RCVBUF); err == nil && cur < 2*total {
		unix.SetsockoptInt(me, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 2*total)
	}
	for i, m := range u.Queue {
		var oob []byte
		if i < len(u.QueueFds) && len(u.QueueFds[i]) > 0 {
			var fds []int
			for _, id := range u.QueueFds[i] {
				g := fileOf(o.Ck, id)
				if g == nil {
					return fmt.Errorf("image is inconsistent: socket:[%d] carries file %d, which is not in it", u.Ino, id)
				}
				fd, err := o.Open(g)
				if err != nil {
					return fmt.Errorf("descriptor in flight on socket:[%d]: %w", u.Ino, err)
				}
				fds = append(fds, fd)
			}
			oob = unix.UnixRights(fds...)
		}
		if err := unix.Sendmsg(sender, m, oob, to, unix.MSG_DONTWAIT); err != nil {
			return fmt.Errorf("queue %d bytes on unix socket:[%d]: %w (the queue no longer fits)", len(m), u.Ino, err)
		}
	}
	return nil
}

// fileOf returns the file record id of c.
func fileOf(c *image.Checkpoint, id int) *image.File {
	for i := range c.Files {
		if c.Files[i].ID == id {
			return &c.Files[i]
		}
	}
	return nil
}
