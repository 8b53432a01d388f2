package files

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// unixSocket: one end of a unix socketpair ("socket:[INO]"), record
// image.UnixSocket. Every socket fd is taken to be one at first; at the end
// of the collection sock_diag (NETLINK_SOCK_DIAG, unix_diag) tells its type,
// peer, name and shutdown state: a named socket or another family is refused,
// an end whose peer no process of the tree holds is external ("socket:[INO]",
// given back by the caller at restore), and the messages queued for it are
// read without taking them (MSG_PEEK with SO_PEEK_OFF). Restore makes each
// pair once with socketpair(2), queues the messages again through the peer,
// sets the buffer sizes, and shuts it down once every process is built.
type unixSocket struct{}

func (unixSocket) Type() string { return image.FileUnix }

func (unixSocket) Recognize(p *Probe) bool { return strings.HasPrefix(p.Target, "socket:") }

func (unixSocket) Dump(p *Probe, f *image.File) error {
	f.Unix = &image.UnixSocket{Ino: p.Ident.Ino} // checked with sock_diag in Resolve
	return nil
}

func (unixSocket) Validate(_ *image.Checkpoint, f *image.File) error {
	if err := need(f.Unix != nil, f, "socket record"); err != nil {
		return err
	}
	if u := f.Unix; f.External == "" && u.Type != unix.SOCK_STREAM && u.Type != unix.SOCK_DGRAM && u.Type != unix.SOCK_SEQPACKET {
		return fmt.Errorf("a unix socket of type %d", u.Type)
	}
	if u := f.Unix; u.Shutdown < 0 || u.Shutdown > 3 {
		return fmt.Errorf("unix socket shutdown mask %d", u.Shutdown)
	}
	return nil
}

// sockState is what one restore's socket ends share.
type sockState struct {
	socks       map[uint64]int // unix socket inode -> cr's fd of that end
	closedPeers map[uint64]int // socket inode -> the other end, to close
}

func (k unixSocket) Open(o *Opener, f *image.File) (int, error) {
	fd, err := k.open(o, f)
	if err != nil {
		return 0, err
	}
	if err := SetFlags(fd, f.Flags); err != nil {
		unix.Close(fd)
		return 0, err
	}
	return fd, nil
}

// open makes the socketpair of a unix socket of the image (the first
// of its two ends to come), queues the messages the socket had waiting (sent
// through its peer), and returns a new fd of this end.
func (k unixSocket) open(o *Opener, f *image.File) (int, error) {
	t := stateOf[sockState](o, k)
	if t.socks == nil {
		t.socks, t.closedPeers = map[uint64]int{}, map[uint64]int{}
	}
	u := f.Unix
	if _, ok := t.socks[u.Ino]; !ok {
		sp, err := unix.Socketpair(unix.AF_UNIX, u.Type|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return 0, fmt.Errorf("socketpair: %w", err)
		}
		t.socks[u.Ino] = sp[0]
		o.Keep(sp[0])
		o.Keep(sp[1])
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
		// Shut down once every queued message is in (Opener.Finish).
		how := map[int]int{1: unix.SHUT_RD, 2: unix.SHUT_WR, 3: unix.SHUT_RDWR}[u.Shutdown]
		o.Late(func() error {
			if err := unix.Shutdown(me, how); err != nil {
				return fmt.Errorf("shutdown socket: %w", err)
			}
			return nil
		})
	}
	return unix.FcntlInt(uintptr(me), unix.F_DUPFD_CLOEXEC, 0)
}

// unix_diag (include/uapi/linux/unix_diag.h).
const (
	udiagShowName     = 0x01
	udiagShowPeer     = 0x04
	udiagShowRQLen    = 0x10
	unixDiagName      = 0
	unixDiagPeer      = 2
	unixDiagRQLen     = 4
	unixDiagShutdown  = 6
	soPeekOff         = 42 // SO_PEEK_OFF
	maxQueuedMessages = 1 << 16
)

// unixSock is what sock_diag tells about one unix socket.
type unixSock struct {
	typ, state uint8
	peer       uint32
	name       string
	shutdown   uint8
}

// unixSockets lists every unix socket of the system by inode (one
// NETLINK_SOCK_DIAG dump).
func unixSockets() (map[uint64]unixSock, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag: %w", err)
	}
	defer unix.Close(fd)
	// struct nlmsghdr + struct unix_diag_req.
	req := make([]byte, 16+24)
	le := binary.LittleEndian
	le.PutUint32(req[0:], uint32(len(req)))
	le.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	le.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	le.PutUint32(req[8:], 1)
	req[16] = unix.AF_UNIX
	le.PutUint32(req[20:], 0xffffffff) // all states
	le.PutUint32(req[28:], udiagShowName|udiagShowPeer|udiagShowRQLen|0x40 /* UDIAG_SHOW_... shutdown is always sent */)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag: %w", err)
	}
	out := map[uint64]unixSock{}
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, fmt.Errorf("sock_diag: %w", err)
		}
		for b := buf[:n]; len(b) >= 16; {
			// struct nlmsghdr: len, type, flags, seq, pid
			l := int(le.Uint32(b))
			if l < 16 || l > len(b) {
				return nil, errors.New("sock_diag: malformed message")
			}
			typ := le.Uint16(b[4:])
			d := b[16:l]
			b = b[min((l+3)&^3, len(b)):]
			switch typ {
			case unix.NLMSG_DONE:
				return out, nil
			case unix.NLMSG_ERROR:
				return nil, errors.New("sock_diag: the kernel answered with an error")
			}
			if len(d) < 16 {
				continue
			}
			s := unixSock{typ: d[1], state: d[2]}
			ino := uint64(le.Uint32(d[4:]))
			attrs, err := parseAttrs(d[16:])
			if err != nil {
				return nil, err
			}
			for _, a := range attrs {
				switch a.typ {
				case unixDiagName:
					s.name = string(a.val)
				case unixDiagPeer:
					if len(a.val) >= 4 {
						s.peer = le.Uint32(a.val)
					}
				case unixDiagShutdown:
					if len(a.val) >= 1 {
						s.shutdown = a.val[0]
					}
				}
			}
			out[ino] = s
		}
	}
}

type attr struct {
	typ uint16
	val []byte
}

func parseAttrs(b []byte) ([]attr, error) {
	var out []attr
	for len(b) >= 4 {
		l := int(binary.LittleEndian.Uint16(b))
		if l < 4 || l > len(b) {
			return nil, errors.New("sock_diag: malformed attribute")
		}
		out = append(out, attr{binary.LittleEndian.Uint16(b[2:]), b[4:l]})
		l = (l + 3) &^ 3
		if l > len(b) {
			break
		}
		b = b[l:]
	}
	return out, nil
}

// peekQueue reads the messages waiting in a unix socket's receive queue
// without taking them: MSG_PEEK on a copy of the fd, stepping through
// datagrams with SO_PEEK_OFF (put back as it was afterwards).
func peekQueue(pid, fd int, typ uint8) ([][]byte, error) {
	s, err := CopyFd(pid, fd)
	if err != nil {
		return nil, err
	}
	defer unix.Close(s)
	old, err := unix.GetsockoptInt(s, unix.SOL_SOCKET, soPeekOff)
	if err != nil {
		return nil, err
	}
	if err := unix.SetsockoptInt(s, unix.SOL_SOCKET, soPeekOff, 0); err != nil {
		return nil, err
	}
	defer unix.SetsockoptInt(s, unix.SOL_SOCKET, soPeekOff, old)
	var out [][]byte
	buf := make([]byte, 1<<20)
	for i := 0; i < maxQueuedMessages; i++ {
		n, _, flags, _, err := unix.Recvmsg(s, buf, nil, unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if errors.Is(err, unix.EAGAIN) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if n == 0 && typ == unix.SOCK_STREAM {
			return out, nil // end of stream
		}
		if flags&unix.MSG_TRUNC != 0 {
			return nil, fmt.Errorf("a queued message is larger than %d bytes", len(buf))
		}
		out = append(out, append([]byte(nil), buf[:n]...))
	}
	return nil, fmt.Errorf("more than %d messages queued", maxQueuedMessages)
}

// Resolve checks every unix socket: it must be unnamed (a socketpair end)
// and its peer, if any, must be in the collection (else it is external); it
// saves the messages queued for it.
func (unixSocket) Resolve(c *Collector, files []*image.File) error {
	inodes := map[uint64]bool{}
	for _, f := range files {
		inodes[f.Unix.Ino] = true
	}
	socks, err := unixSockets()
	if err != nil {
		return err
	}
	for _, f := range files {
		pid, fd := c.Owner(f.ID)
		s, ok := socks[f.Unix.Ino]
		if !ok {
			c.Refuse(&UnsupportedError{Pid: pid, Fd: fd, What: "a " + socketFamily(pid, fd) + " socket"})
			continue
		}
		if s.name != "" {
			c.Refuse(&UnsupportedError{Pid: pid, Fd: fd, What: fmt.Sprintf("a named unix socket (%q)", s.name)})
			continue
		}
		if s.peer != 0 && !inodes[uint64(s.peer)] {
			// A socketpair end whose peer lives outside the tree: the
			// caller gives it back at restore; what sits in its queue
			// stays with the old socket.
			f.Unix.Type, f.Unix.Peer, f.Unix.Shutdown = int(s.typ), uint64(s.peer), int(s.shutdown)
			f.External = fmt.Sprintf("socket:[%d]", f.Unix.Ino)
			continue
		}
		if s.typ != unix.SOCK_STREAM && s.typ != unix.SOCK_DGRAM && s.typ != unix.SOCK_SEQPACKET {
			c.Refuse(&UnsupportedError{Pid: pid, Fd: fd, What: fmt.Sprintf("a unix socket of type %d", s.typ)})
			continue
		}
		f.Unix.Type, f.Unix.Peer, f.Unix.Shutdown = int(s.typ), uint64(s.peer), int(s.shutdown)
		if c, err := CopyFd(pid, fd); err == nil {
			f.Unix.SndBuf, _ = unix.GetsockoptInt(c, unix.SOL_SOCKET, unix.SO_SNDBUF)
			f.Unix.RcvBuf, _ = unix.GetsockoptInt(c, unix.SOL_SOCKET, unix.SO_RCVBUF)
			unix.Close(c)
		}
		if f.Unix.Queue, err = peekQueue(pid, fd, s.typ); err != nil {
			return fmt.Errorf("fd %d of pid %d: read queued messages: %w", fd, pid, err)
		}
	}
	return nil
}

// socketFamily names the address family of a socket fd of pid.
func socketFamily(pid, fd int) string {
	s, err := CopyFd(pid, fd)
	if err != nil {
		return "non-unix"
	}
	defer unix.Close(s)
	dom, err := unix.GetsockoptInt(s, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return "non-unix"
	}
	switch dom {
	case unix.AF_INET:
		return "TCP/IP (AF_INET)"
	case unix.AF_INET6:
		return "TCP/IPv6 (AF_INET6)"
	case unix.AF_NETLINK:
		return "netlink"
	case unix.AF_PACKET:
		return "packet"
	}
	return fmt.Sprintf("family %d", dom)
}
