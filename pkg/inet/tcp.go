package inet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/sockdiag"
	"golang.org/x/sys/unix"
)

// RefusedError says why a socket cannot be saved: a state or an option cr
// does not restore. Socket names it ("TCP connection 127.0.0.1:40000 ->
// 127.0.0.1:8080", "TCP listener [::]:80").
type RefusedError struct {
	Socket string
	Reason string
	// Option, if set, is the cr dump option that saves the socket anyway
	// ("--skip-in-flight"), and Does what it does ("to save it without
	// them"); the caller words the advice.
	Option string
	Does   string
}

func (e *RefusedError) Error() string { return e.Socket + " " + e.Reason }

// DumpOptions change what Dump accepts.
type DumpOptions struct {
	// SkipInFlight: a listener's connections waiting in accept() are left
	// behind (they die with the old socket) instead of refusing the
	// listener (CRIU's --skip-in-flight).
	SkipInFlight bool
	// CheckOnly: the pre-flight. Dump refuses what it would refuse but
	// reads nothing through repair mode (no network lock is held): an
	// established connection's record comes back without its stream.
	CheckOnly bool
}

func describe(d *sockdiag.InetSock) string {
	if d.State == sockdiag.TCPListen {
		return "TCP listener " + d.Local.String()
	}
	return fmt.Sprintf("TCP connection %v -> %v", d.Local, d.Remote)
}

// Dump reads the TCP socket behind fd, cr's copy of the target's fd
// (pidfd_getfd acts on the same socket). diag is the socket's sock_diag
// entry (sockdiag.TCP, keyed by the fd's inode); nil makes Dump ask for it.
//
// A listener gives its address, backlog and options. An established
// connection is put in repair mode (TCP_REPAIR, kernel net/ipv4/tcp.c;
// CRIU soccr/soccr.c libsoccr_save) and read: sequence numbers, both
// queues, the handshake's options, the window; it is left in repair mode,
// so that it sends nothing more and closes silently (Release), or goes on
// after Resume. The network lock must already drop the connection's packets
// (pkg/netlock): otherwise the queues move while they are read.
//
// Closing states (FIN_WAIT1/2, CLOSE_WAIT, LAST_ACK, CLOSING, TIME_WAIT),
// SYN_SENT, SYN_RECV, an unconnected socket, a listener with connections
// waiting in accept() (unless opts.SkipInFlight) and a socket with an option
// of optionChecks at a non-default value give a *RefusedError. On any error
// the socket is as it was (repair off again).
func Dump(fd int, diag *sockdiag.InetSock, opts DumpOptions) (*image.InetSocket, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("tcp socket: fstat: %w", err)
	}
	if diag == nil {
		all, err := sockdiag.TCP()
		if err != nil {
			return nil, err
		}
		d, ok := all[st.Ino]
		if !ok {
			return nil, fmt.Errorf("tcp socket %d: not found by sock_diag", st.Ino)
		}
		diag = &d
	}
	if uint64(diag.Inode) != st.Ino {
		return nil, fmt.Errorf("tcp socket %d: sock_diag entry is socket %d", st.Ino, diag.Inode)
	}
	family, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return nil, fmt.Errorf("%s: getsockopt SO_DOMAIN: %w", describe(diag), err)
	}
	proto, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	if err != nil {
		return nil, fmt.Errorf("%s: getsockopt SO_PROTOCOL: %w", describe(diag), err)
	}
	s := &image.InetSocket{
		Ino: st.Ino, Family: family, Protocol: proto, State: int(diag.State),
		Local: diag.Local.String(), Shutdown: int(diag.Shutdown),
	}
	name := describe(diag)
	if proto == unix.IPPROTO_MPTCP && diag.State != sockdiag.TCPListen {
		// An MPTCP listener is rebuilt as one (its options are a subset
		// of TCP's); a connection that really is MPTCP (not fallen back
		// to TCP, which accept gives as a plain TCP socket) has no repair.
		return nil, &RefusedError{Socket: "MPTCP connection " + diag.Local.String() + " -> " + diag.Remote.String(), Reason: "is a multipath TCP connection: not supported yet"}
	}
	switch diag.State {
	case sockdiag.TCPListen:
		if n := diag.AcceptQueue(); n > 0 && !opts.SkipInFlight {
			return nil, &RefusedError{Socket: name, Reason: fmt.Sprintf("has %d connection(s) waiting in accept() (in flight)", n),
				Option: "--skip-in-flight", Does: "to save it without them (they are not restored)"}
		}
		s.Backlog = diag.Backlog()
	case sockdiag.TCPEstablished:
		s.Remote = diag.Remote.String()
	case sockdiag.TCPClose:
		return nil, &RefusedError{Socket: name, Reason: "is not connected nor listening (state CLOSE): not supported yet"}
	default:
		return nil, &RefusedError{Socket: name, Reason: fmt.Sprintf("is in state %s (closing or connecting): not supported yet", sockdiag.StateName(diag.State))}
	}
	if s.Shutdown&sockdiag.ShutdownSend != 0 {
		return nil, &RefusedError{Socket: name, Reason: "is half-closed (shut down for sending): not supported yet"}
	}
	bad, err := refusedOptions(fd, family, diag.State == sockdiag.TCPListen)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(bad) > 0 {
		return nil, &RefusedError{Socket: name, Reason: "has socket options cr does not restore: " + strings.Join(bad, ", ")}
	}
	if s.Options, err = readOptions(fd, family); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if diag.State == sockdiag.TCPListen || opts.CheckOnly {
		return s, nil
	}
	if s.TCP, err = dumpStream(fd, s); err != nil {
		var r *RefusedError
		if errors.As(err, &r) {
			return nil, err
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return s, nil
}

func setRepair(fd, v int) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_TCP, unix.TCP_REPAIR, v); err != nil {
		return fmt.Errorf("setsockopt TCP_REPAIR=%d: %w", v, err)
	}
	return nil
}

// dumpStream reads an established connection in repair mode (soccr's
// libsoccr_save); on error it turns repair off again.
func dumpStream(fd int, s *image.InetSocket) (t *image.TCPStream, err error) {
	if err := setRepair(fd, unix.TCP_REPAIR_ON); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			Resume(fd, s)
		}
	}()
	info := make([]byte, tcpInfoLen)
	n, err := getsockoptRaw(fd, unix.SOL_TCP, unix.TCP_INFO, info)
	if err != nil {
		return nil, fmt.Errorf("getsockopt TCP_INFO: %w", err)
	}
	ti, err := sockdiag.ParseTCPInfo(info[:n])
	if err != nil {
		return nil, err
	}
	if ti.State != sockdiag.TCPEstablished {
		return nil, &RefusedError{Socket: "TCP connection " + s.Local + " -> " + s.Remote, Reason: "is in state " + sockdiag.StateName(ti.State) + " (closing): not supported yet"}
	}
	t = &image.TCPStream{OptMask: ti.Options & (sockdiag.TCPIOptTimestamps | sockdiag.TCPIOptSACK | sockdiag.TCPIOptWscale)}
	if t.OptMask&sockdiag.TCPIOptWscale != 0 {
		t.SndWscale, t.RcvWscale = ti.SndWscale, ti.RcvWscale
	}
	ioctl := func(name string, req uint) (uint32, error) {
		v, err := unix.IoctlGetInt(fd, req)
		if err != nil {
			return 0, fmt.Errorf("ioctl %s: %w", name, err)
		}
		return uint32(v), nil
	}
	outq, err := ioctl("SIOCOUTQ", unix.SIOCOUTQ) // write_seq - snd_una
	if err != nil {
		return nil, err
	}
	if t.Unsent, err = ioctl("SIOCOUTQNSD", unix.SIOCOUTQNSD); err != nil { // write_seq - snd_nxt
		return nil, err
	}
	inq, err := ioctl("SIOCINQ", unix.SIOCINQ) // rcv_nxt - copied_seq
	if err != nil {
		return nil, err
	}
	mss, err := unix.GetsockoptInt(fd, unix.SOL_TCP, unix.TCP_MAXSEG)
	if err != nil {
		return nil, fmt.Errorf("getsockopt TCP_MAXSEG: %w", err)
	}
	t.MSS = uint32(mss)
	if t.OptMask&sockdiag.TCPIOptTimestamps != 0 {
		ts, err := unix.GetsockoptInt(fd, unix.SOL_TCP, unix.TCP_TIMESTAMP)
		if err != nil {
			return nil, fmt.Errorf("getsockopt TCP_TIMESTAMP: %w", err)
		}
		t.Timestamp = uint32(ts)
	}
	if t.Window, err = getWindow(fd); err != nil {
		return nil, err
	}
	if t.InqSeq, t.RecvQueue, err = peekQueue(fd, tcpRecvQueue, inq); err != nil {
		return nil, fmt.Errorf("receive queue: %w", err)
	}
	if t.OutqSeq, t.SendQueue, err = peekQueue(fd, tcpSendQueue, outq); err != nil {
		return nil, fmt.Errorf("send queue: %w", err)
	}
	if t.Unsent > outq {
		return nil, fmt.Errorf("%d unsent bytes in a send queue of %d", t.Unsent, outq)
	}
	return t, nil
}

// getWindow reads TCP_REPAIR_WINDOW. The kernel wants the exact size of its
// struct tcp_repair_window (EINVAL otherwise): 20 bytes on 6.18, more on
// later kernels that extend it; try the known sizes, smallest first.
func getWindow(fd int) (*image.TCPWindow, error) {
	var b [64]byte
	var err error
	for _, size := range []int{tcpWindowSize, 32, 36} {
		var n int
		if n, err = getsockoptRaw(fd, unix.SOL_TCP, unix.TCP_REPAIR_WINDOW, b[:size]); err == nil {
			le := binary.LittleEndian
			w := &image.TCPWindow{SndWl1: le.Uint32(b[0:]), SndWnd: le.Uint32(b[4:]), MaxWindow: le.Uint32(b[8:]),
				RcvWnd: le.Uint32(b[12:]), RcvWup: le.Uint32(b[16:]), Size: n}
			if n > tcpWindowSize {
				w.Extra = append([]byte(nil), b[tcpWindowSize:n]...)
			}
			return w, nil
		}
		if !errors.Is(err, unix.EINVAL) {
			break
		}
	}
	return nil, fmt.Errorf("getsockopt TCP_REPAIR_WINDOW: %w", err)
}

func setWindow(fd int, w *image.TCPWindow) error {
	b := make([]byte, w.Size)
	le := binary.LittleEndian
	le.PutUint32(b[0:], w.SndWl1)
	le.PutUint32(b[4:], w.SndWnd)
	le.PutUint32(b[8:], w.MaxWindow)
	le.PutUint32(b[12:], w.RcvWnd)
	le.PutUint32(b[16:], w.RcvWup)
	copy(b[tcpWindowSize:], w.Extra)
	if err := setsockoptRaw(fd, unix.SOL_TCP, unix.TCP_REPAIR_WINDOW, b); err != nil {
		return fmt.Errorf("setsockopt TCP_REPAIR_WINDOW (%d bytes): %w", w.Size, err)
	}
	return nil
}

// peekQueue selects a repair queue, reads its sequence number and peeks its
// n bytes, asking for n+1 to check there are exactly n (the lock holds the
// queues still).
func peekQueue(fd, q int, n uint32) (uint32, []byte, error) {
	if err := unix.SetsockoptInt(fd, unix.SOL_TCP, unix.TCP_REPAIR_QUEUE, q); err != nil {
		return 0, nil, fmt.Errorf("setsockopt TCP_REPAIR_QUEUE=%d: %w", q, err)
	}
	seq, err := unix.GetsockoptInt(fd, unix.SOL_TCP, unix.TCP_QUEUE_SEQ)
	if err != nil {
		return 0, nil, fmt.Errorf("getsockopt TCP_QUEUE_SEQ: %w", err)
	}
	if n == 0 {
		return uint32(seq), nil, nil
	}
	buf := make([]byte, n+1)
	m, _, err := unix.Recvfrom(fd, buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
	if err != nil {
		return 0, nil, fmt.Errorf("peek %d bytes: %w", n, err)
	}
	if m != int(n) {
		return 0, nil, fmt.Errorf("peek gave %d bytes, the queue holds %d (did packets pass the network lock?)", m, n)
	}
	return uint32(seq), buf[:n], nil
}

// Resume undoes Dump on the original socket, for a dump that fails or
// leaves the target running: repair off (with a window probe, so the peer
// learns the window at once), SO_REUSEADDR back. Unlock the network after.
// A listener needs nothing.
func Resume(fd int, s *image.InetSocket) error {
	if s.State != image.TCPEstablished {
		return nil
	}
	if err := setRepair(fd, unix.TCP_REPAIR_OFF); err != nil {
		return fmt.Errorf("resume TCP connection %s -> %s: %w", s.Local, s.Remote, err)
	}
	if err := applyReuseAddr(fd, &s.Options); err != nil {
		return fmt.Errorf("resume TCP connection %s -> %s: %w", s.Local, s.Remote, err)
	}
	return nil
}

// Release closes cr's copy of a dumped socket once the target is dead (or
// its fd closed). A connection still in repair mode goes without a FIN or
// a reset (tcp_disconnect in repair mode sends nothing; the socket leaves
// no TIME_WAIT either); Release turns repair on again first if something
// turned it off. A listener's close resets any connection still waiting in
// its accept queue (only with SkipInFlight).
func Release(fd int, s *image.InetSocket) error {
	if s.State == image.TCPEstablished {
		if v, err := unix.GetsockoptInt(fd, unix.SOL_TCP, unix.TCP_REPAIR); err != nil || v != 1 {
			if err := setRepair(fd, unix.TCP_REPAIR_ON); err != nil {
				unix.Close(fd)
				return fmt.Errorf("release TCP connection %s -> %s: %w", s.Local, s.Remote, err)
			}
		}
	}
	if err := unix.Close(fd); err != nil {
		return fmt.Errorf("release TCP socket %d: close: %w", s.Ino, err)
	}
	return nil
}

func sockaddr(a netip.AddrPort, family int) unix.Sockaddr {
	if family == unix.AF_INET {
		return &unix.SockaddrInet4{Addr: a.Addr().As4(), Port: int(a.Port())}
	}
	return &unix.SockaddrInet6{Addr: a.Addr().As16(), Port: int(a.Port())}
}

// Restore makes a socket from a record that passed Validate, in cr's
// process, and returns its fd (close-on-exec, blocking; the caller sets the
// file's flags and installs it). A listener is bound and listening with
// its backlog; a connection is rebuilt with TCP repair (soccr's
// libsoccr_restore) and has left repair mode: the network lock must still
// hold, and stay until every socket of the image is restored (both ends of
// a connection inside the image, or the peer's retransmissions, would
// otherwise meet a missing socket and be reset). On error nothing is left
// open.
func Restore(s *image.InetSocket) (int, error) {
	fd, err := restore(s)
	if err != nil {
		what := "TCP listener " + s.Local
		if s.State == image.TCPEstablished {
			what = fmt.Sprintf("TCP connection %s -> %s", s.Local, s.Remote)
		}
		return -1, fmt.Errorf("restore %s: %w", what, err)
	}
	return fd, nil
}

func restore(s *image.InetSocket) (fd int, err error) {
	local, err := s.LocalAddr()
	if err != nil {
		return -1, err
	}
	fd, err = unix.Socket(s.Family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, s.Protocol)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	defer func() {
		if err != nil {
			if s.State == image.TCPEstablished {
				unix.SetsockoptInt(fd, unix.SOL_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_ON) // close silently
			}
			unix.Close(fd)
		}
	}()
	if err := applyBindOptions(fd, s.Family, &s.Options); err != nil {
		return fd, err
	}
	if s.State == image.TCPListen {
		if err := applyOptions(fd, s.Family, &s.Options); err != nil {
			return fd, err
		}
		if err := unix.Bind(fd, sockaddr(local, s.Family)); err != nil {
			return fd, fmt.Errorf("bind: %w (is the original socket, or another program, still listening there?)", err)
		}
		if err := unix.Listen(fd, s.Backlog); err != nil {
			return fd, fmt.Errorf("listen: %w", err)
		}
		return fd, applyReuseAddr(fd, &s.Options)
	}
	return fd, restoreStream(fd, s, local)
}

// restoreStream is the repair sequence of an established connection on a
// fresh socket: the order matters (see docs/DESIGN.md, "TCP sockets").
func restoreStream(fd int, s *image.InetSocket, local netip.AddrPort) error {
	t := s.TCP
	remote, err := s.RemoteAddr()
	if err != nil {
		return err
	}
	if err := setRepair(fd, unix.TCP_REPAIR_ON); err != nil {
		return err
	}
	if err := unix.Bind(fd, sockaddr(local, s.Family)); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	// Each queue's sequence number is where it starts: writing the saved
	// bytes back moves it to the saved end.
	if err := setQueueSeq(fd, tcpRecvQueue, t.InqSeq-uint32(len(t.RecvQueue))); err != nil {
		return err
	}
	if err := setQueueSeq(fd, tcpSendQueue, t.OutqSeq-uint32(len(t.SendQueue))); err != nil {
		return err
	}
	if err := unix.Connect(fd, sockaddr(remote, s.Family)); err != nil { // no SYN in repair mode
		return fmt.Errorf("connect: %w (is the original connection still open?)", err)
	}
	// Before any data: the kernel refuses TCP_REPAIR_OPTIONS once bytes
	// were sent.
	var ro []unix.TCPRepairOpt
	if t.OptMask&sockdiag.TCPIOptSACK != 0 {
		ro = append(ro, unix.TCPRepairOpt{Code: unix.TCPOPT_SACK_PERMITTED})
	}
	if t.OptMask&sockdiag.TCPIOptWscale != 0 {
		ro = append(ro, unix.TCPRepairOpt{Code: unix.TCPOPT_WINDOW, Val: uint32(t.SndWscale) | uint32(t.RcvWscale)<<16})
	}
	if t.OptMask&sockdiag.TCPIOptTimestamps != 0 {
		ro = append(ro, unix.TCPRepairOpt{Code: unix.TCPOPT_TIMESTAMP})
	}
	ro = append(ro, unix.TCPRepairOpt{Code: unix.TCPOPT_MAXSEG, Val: t.MSS})
	if err := unix.SetsockoptTCPRepairOpt(fd, unix.SOL_TCP, unix.TCP_REPAIR_OPTIONS, ro); err != nil {
		return fmt.Errorf("setsockopt TCP_REPAIR_OPTIONS: %w", err)
	}
	if t.OptMask&sockdiag.TCPIOptTimestamps != 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_TCP, unix.TCP_TIMESTAMP, int(int32(t.Timestamp))); err != nil {
			return fmt.Errorf("setsockopt TCP_TIMESTAMP: %w", err)
		}
	}
	// Room for the queues: the writes below must neither block nor fail
	// for lack of buffer (CRIU raises both with SO_*BUFFORCE too).
	forced, err := raiseBuffers(fd, len(t.RecvQueue), len(t.SendQueue))
	if err != nil {
		return err
	}
	if len(t.RecvQueue) > 0 {
		if err := writeQueue(fd, tcpRecvQueue, t.RecvQueue); err != nil {
			return fmt.Errorf("receive queue: %w", err)
		}
	}
	sent := len(t.SendQueue) - int(t.Unsent)
	if sent > 0 {
		if err := writeQueue(fd, tcpSendQueue, t.SendQueue[:sent]); err != nil {
			return fmt.Errorf("send queue: %w", err)
		}
	}
	if t.Unsent > 0 {
		// Never transmitted: written as ordinary data, out of repair
		// mode (soccr does the same), to go out when the lock lifts.
		if err := setRepair(fd, unix.TCP_REPAIR_OFF_NO_WP); err != nil {
			return err
		}
		if err := writeAll(fd, t.SendQueue[sent:]); err != nil {
			return fmt.Errorf("unsent data: %w", err)
		}
		if err := setRepair(fd, unix.TCP_REPAIR_ON); err != nil {
			return err
		}
	}
	if t.Window != nil {
		// After the receive queue: the kernel checks it against rcv_nxt.
		if err := setWindow(fd, t.Window); err != nil {
			return err
		}
	}
	if err := setRepair(fd, unix.TCP_REPAIR_OFF); err != nil {
		return err
	}
	if err := applyReuseAddr(fd, &s.Options); err != nil {
		return err
	}
	if err := lowerBuffers(fd, forced, &s.Options); err != nil {
		return err
	}
	if err := applyOptions(fd, s.Family, &s.Options); err != nil {
		return err
	}
	if s.Shutdown&sockdiag.ShutdownRecv != 0 {
		if err := unix.Shutdown(fd, unix.SHUT_RD); err != nil {
			return fmt.Errorf("shutdown SHUT_RD: %w", err)
		}
	}
	return nil
}

func setQueueSeq(fd, q int, seq uint32) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_TCP, unix.TCP_REPAIR_QUEUE, q); err != nil {
		return fmt.Errorf("setsockopt TCP_REPAIR_QUEUE=%d: %w", q, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_TCP, unix.TCP_QUEUE_SEQ, int(int32(seq))); err != nil {
		return fmt.Errorf("setsockopt TCP_QUEUE_SEQ=%d (queue %d): %w", seq, q, err)
	}
	return nil
}

// raiseBuffers makes the send and receive buffers hold the saved queues
// (SO_*BUFFORCE, CAP_NET_ADMIN) when the fresh socket's are smaller, and
// says which it raised.
func raiseBuffers(fd, rcv, snd int) (forced int, err error) {
	for _, b := range []struct {
		get, force, lock, n int
		name                string
	}{
		{unix.SO_RCVBUF, unix.SO_RCVBUFFORCE, rcvBufLock, rcv, "SO_RCVBUFFORCE"},
		{unix.SO_SNDBUF, unix.SO_SNDBUFFORCE, sndBufLock, snd, "SO_SNDBUFFORCE"},
	} {
		if b.n == 0 {
			continue
		}
		cur, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, b.get)
		if err != nil {
			return forced, fmt.Errorf("getsockopt: %w", err)
		}
		// Queued bytes cost about twice their size in skb overhead.
		want := 2*b.n + 64<<10
		if cur >= want {
			continue
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, b.force, want); err != nil {
			return forced, fmt.Errorf("setsockopt %s=%d: %w", b.name, want, err)
		}
		forced |= b.lock
	}
	return forced, nil
}

// lowerBuffers undoes raiseBuffers: a buffer the program had set gets its
// value back (applyOptions), the others go back to kernel autotuning
// (SO_BUF_LOCK cleared; the size shrinks as autotuning sees fit).
func lowerBuffers(fd, forced int, o *image.InetOptions) error {
	keep := 0
	if o.SndBuf != 0 {
		keep |= sndBufLock
	}
	if o.RcvBuf != 0 {
		keep |= rcvBufLock
	}
	if forced&^keep == 0 {
		return nil
	}
	lock, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_BUF_LOCK)
	if err != nil {
		return fmt.Errorf("getsockopt SO_BUF_LOCK: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_BUF_LOCK, lock&^(forced&^keep)); err != nil {
		return fmt.Errorf("setsockopt SO_BUF_LOCK: %w", err)
	}
	return nil
}

// writeQueue writes bytes into a repair queue, in chunks that halve when
// the kernel cannot allocate one that big (soccr's __send_queue).
func writeQueue(fd, q int, b []byte) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_TCP, unix.TCP_REPAIR_QUEUE, q); err != nil {
		return fmt.Errorf("setsockopt TCP_REPAIR_QUEUE=%d: %w", q, err)
	}
	chunk := len(b)
	for len(b) > 0 {
		n, err := unix.SendmsgN(fd, b[:min(chunk, len(b))], nil, nil, unix.MSG_DONTWAIT)
		if errors.Is(err, unix.ENOMEM) && chunk > 1024 {
			chunk /= 2
			continue
		}
		if err != nil {
			return fmt.Errorf("write %d bytes: %w", min(chunk, len(b)), err)
		}
		b = b[n:]
	}
	return nil
}

// writeAll writes ordinary data without blocking (the buffers were raised
// for it).
func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.SendmsgN(fd, b, nil, nil, unix.MSG_DONTWAIT)
		if err != nil {
			return fmt.Errorf("write %d bytes: %w", len(b), err)
		}
		b = b[n:]
	}
	return nil
}
