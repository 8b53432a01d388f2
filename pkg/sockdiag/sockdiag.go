package sockdiag

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// TCP states (include/net/tcp_states.h), as sock_diag and tcp_info report
// them.
const (
	TCPEstablished = 1
	TCPSynSent     = 2
	TCPSynRecv     = 3
	TCPFinWait1    = 4
	TCPFinWait2    = 5
	TCPTimeWait    = 6
	TCPClose       = 7
	TCPCloseWait   = 8
	TCPLastAck     = 9
	TCPListen      = 10
	TCPClosing     = 11
	TCPNewSynRecv  = 12
)

// AllStates asks for sockets in every state (including TIME_WAIT and the
// NEW_SYN_RECV request sockets of a handshake in progress).
const AllStates = 0xffffffff

var tcpStateNames = [...]string{"", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2",
	"TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV", "BOUND_INACTIVE"}

// StateName names a TCP state ("ESTABLISHED"), or "state N" for an unknown one.
func StateName(state uint8) string {
	if int(state) < len(tcpStateNames) && state != 0 {
		return tcpStateNames[state]
	}
	return fmt.Sprintf("state %d", state)
}

// Shutdown bits of InetSock.Shutdown and UnixSock.Shutdown (include/net/sock.h).
const (
	ShutdownRecv = 1 // RCV_SHUTDOWN
	ShutdownSend = 2 // SEND_SHUTDOWN
)

// InetSock is what inet_diag reports about one AF_INET/AF_INET6 socket
// (struct inet_diag_msg and the extensions cr asks for).
type InetSock struct {
	Family  uint8 // AF_INET or AF_INET6 (an AF_INET6 socket talking IPv4 shows ::ffff:a.b.c.d)
	State   uint8 // TCP* state
	Timer   uint8 // pending timer: 0 none, 1 retransmit, 2 keepalive, 3 TIME_WAIT, 4 zero window probe
	Retrans uint8
	Local   netip.AddrPort
	Remote  netip.AddrPort // zero port and unspecified address for a listener
	Iface   uint32         // bound interface index (SO_BINDTODEVICE), 0 if none
	Cookie  uint64         // the kernel's socket cookie
	Expires uint32         // ms until the timer fires
	// RQueue and WQueue: for a listener, the number of connections waiting
	// in accept() (sk_ack_backlog) and the listen() backlog
	// (sk_max_ack_backlog); otherwise the unread bytes (rcv_nxt -
	// copied_seq, SIOCINQ) and the unacknowledged plus unsent bytes
	// (write_seq - snd_una, SIOCOUTQ).
	RQueue, WQueue uint32
	UID            uint32
	Inode          uint32 // 0 for sockets no fd owns (accept queue, TIME_WAIT)
	Shutdown       uint8  // ShutdownRecv | ShutdownSend
	Congestion     string // congestion control algorithm (TCP), "" if not sent
	TOS, TClass    int    // IP_TOS, IPV6_TCLASS; -1 if not sent
	V6Only         int    // IPV6_V6ONLY, -1 if not sent (it is not for established sockets)
	Mark           uint32 // SO_MARK, valid if HasMark (needs CAP_NET_ADMIN)
	HasMark        bool
	// SkMem is INET_DIAG_SKMEMINFO, indexed by SK_MEMINFO_* (rmem_alloc,
	// rcvbuf, wmem_alloc, sndbuf, fwd_alloc, wmem_queued, optmem, backlog,
	// drops).
	SkMem []uint32
	// Info is struct tcp_info as the kernel sent it (TCP only); see
	// ParseTCPInfo.
	Info []byte
}

// Backlog is a listener's listen() backlog (after the kernel's cap at
// net.core.somaxconn).
func (s *InetSock) Backlog() int { return int(s.WQueue) }

// AcceptQueue is the number of connections a listener holds that accept()
// has not taken yet.
func (s *InetSock) AcceptQueue() int { return int(s.RQueue) }

// TCPInfo is the part of struct tcp_info (include/uapi/linux/tcp.h) that
// cr uses, including the window scales that x/sys/unix.TCPInfo hides.
type TCPInfo struct {
	State     uint8
	CAState   uint8
	Options   uint8 // TCPI_OPT_TIMESTAMPS 1, SACK 2, WSCALE 4, ECN 8, ...
	SndWscale uint8 // valid if Options has TCPI_OPT_WSCALE
	RcvWscale uint8
	RTO       uint32 // µs
	SndMSS    uint32
	RcvMSS    uint32
	Unacked   uint32 // segments
}

// tcp_info option bits (TCPI_OPT_*, include/uapi/linux/tcp.h; not in x/sys).
const (
	TCPIOptTimestamps = 1
	TCPIOptSACK       = 2
	TCPIOptWscale     = 4
	TCPIOptECN        = 8
)

// ParseTCPInfo decodes a raw struct tcp_info (from INET_DIAG_INFO or
// getsockopt(TCP_INFO)); it needs its first 28 bytes.
func ParseTCPInfo(b []byte) (TCPInfo, error) {
	if len(b) < tcpiMinLength {
		return TCPInfo{}, fmt.Errorf("tcp_info of %d bytes, want at least %d", len(b), tcpiMinLength)
	}
	le := binary.LittleEndian
	return TCPInfo{
		State: b[tcpiState], CAState: b[tcpiCAState], Options: b[tcpiOptions],
		SndWscale: b[tcpiWscale] & 0xf, RcvWscale: b[tcpiWscale] >> 4,
		RTO: le.Uint32(b[tcpiRTO:]), SndMSS: le.Uint32(b[tcpiSndMSS:]), RcvMSS: le.Uint32(b[tcpiRcvMSS:]),
		Unacked: le.Uint32(b[tcpiUnacked:]),
	}, nil
}

// UnixVFS is the inode a bound unix socket's path names (UNIX_DIAG_VFS).
type UnixVFS struct {
	Ino uint32
	Dev uint32 // the kernel's internal dev_t encoding (MKDEV: major<<20 | minor)
}

// UnixSock is what unix_diag reports about one AF_UNIX socket.
type UnixSock struct {
	Type   uint8 // SOCK_STREAM 1, SOCK_DGRAM 2, SOCK_SEQPACKET 5
	State  uint8 // TCP_ESTABLISHED 1, TCP_CLOSE 7, TCP_LISTEN 10 (unix sockets reuse them)
	Ino    uint32
	Cookie uint64
	Name   string   // bound path; an abstract name starts with NUL; "" if unbound
	VFS    *UnixVFS // set for a socket bound to a path
	Peer   uint32   // inode of the peer, 0 if none
	// Icons: for a listener, the inodes of the client sockets whose
	// connections wait in accept() (the server ends have no inode yet, so
	// such a client's Peer is 0).
	Icons []uint32
	// RQueue and WQueue (UNIX_DIAG_RQLEN, valid if HasRQLen): for a
	// listener, pending connections and backlog; otherwise bytes queued for
	// reading and bytes of written data not yet freed.
	RQueue, WQueue uint32
	HasRQLen       bool
	Shutdown       uint8 // ShutdownRecv | ShutdownSend
}

// Conn is a NETLINK_SOCK_DIAG socket, for callers that make several
// requests; the package-level functions dial one per call.
type Conn struct{ c *netlink.Conn }

// Dial opens a NETLINK_SOCK_DIAG socket.
func Dial() (*Conn, error) {
	c, err := netlink.Dial(unix.NETLINK_SOCK_DIAG, nil)
	if err != nil {
		return nil, fmt.Errorf("sock_diag: open netlink socket: %w", err)
	}
	return &Conn{c}, nil
}

// Close closes the socket.
func (c *Conn) Close() error { return c.c.Close() }

func (c *Conn) dumpReq(req []byte) ([]netlink.Message, error) {
	return c.c.Execute(netlink.Message{
		Header: netlink.Header{Type: unix.SOCK_DIAG_BY_FAMILY, Flags: netlink.Request | netlink.Dump},
		Data:   req,
	})
}

// Inet dumps the sockets of one family (AF_INET or AF_INET6) and protocol
// (IPPROTO_TCP, ...) whose state bit (1 << state) is in states.
func (c *Conn) Inet(family, protocol uint8, states uint32) ([]InetSock, error) {
	return c.inet(inetDiagReq(family, protocol, states), family, protocol)
}

func (c *Conn) inet(req []byte, family, protocol uint8) ([]InetSock, error) {
	msgs, err := c.dumpReq(req)
	if err != nil {
		return nil, fmt.Errorf("sock_diag inet family %d protocol %d: %w", family, protocol, err)
	}
	out := make([]InetSock, 0, len(msgs))
	for _, m := range msgs {
		if m.Header.Type != unix.SOCK_DIAG_BY_FAMILY {
			continue
		}
		s, err := parseInetDiagMsg(m.Data)
		if err != nil {
			return nil, fmt.Errorf("sock_diag inet family %d: %w", family, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// TCP dumps every TCP socket of both families that an fd owns (inode not
// 0), keyed by inode.
func (c *Conn) TCP() (map[uint64]InetSock, error) { return c.tcp(inetDiagAllExt) }

// BriefTCP is TCP without the extensions that cost the kernel most for a
// large table: no tcp_info (Info), memory (SkMem), congestion control,
// TOS or TCLASS; the shutdown state and what comes unasked (V6Only,
// Mark) are there. On a table of thousands of sockets it is several times
// cheaper than TCP.
func (c *Conn) BriefTCP() (map[uint64]InetSock, error) { return c.tcp(inetDiagBriefExt) }

func (c *Conn) tcp(ext uint8) (map[uint64]InetSock, error) {
	out := map[uint64]InetSock{}
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		ss, err := c.inet(inetDiagReqExt(fam, unix.IPPROTO_TCP, AllStates, ext), fam, unix.IPPROTO_TCP)
		if err != nil {
			return nil, err
		}
		for _, s := range ss {
			if s.Inode != 0 {
				out[uint64(s.Inode)] = s
			}
		}
	}
	return out, nil
}

// Unix dumps every unix socket, keyed by inode.
func (c *Conn) Unix() (map[uint64]UnixSock, error) {
	msgs, err := c.dumpReq(unixDiagReq())
	if err != nil {
		return nil, fmt.Errorf("sock_diag unix: %w", err)
	}
	out := make(map[uint64]UnixSock, len(msgs))
	for _, m := range msgs {
		if m.Header.Type != unix.SOCK_DIAG_BY_FAMILY {
			continue
		}
		s, err := parseUnixDiagMsg(m.Data)
		if err != nil {
			return nil, fmt.Errorf("sock_diag unix: %w", err)
		}
		out[uint64(s.Ino)] = s
	}
	return out, nil
}

func with[T any](f func(c *Conn) (T, error)) (T, error) {
	c, err := Dial()
	if err != nil {
		var zero T
		return zero, err
	}
	defer c.Close()
	return f(c)
}

// Inet dumps the sockets of one family and protocol; see Conn.Inet.
func Inet(family, protocol uint8, states uint32) ([]InetSock, error) {
	return with(func(c *Conn) ([]InetSock, error) { return c.Inet(family, protocol, states) })
}

// TCP dumps every TCP socket an fd owns, keyed by inode; see Conn.TCP.
func TCP() (map[uint64]InetSock, error) { return with((*Conn).TCP) }

// BriefTCP dumps every TCP socket an fd owns, keyed by inode, without the
// costly extensions; see Conn.BriefTCP.
func BriefTCP() (map[uint64]InetSock, error) { return with((*Conn).BriefTCP) }

// Unix dumps every unix socket, keyed by inode; see Conn.Unix.
func Unix() (map[uint64]UnixSock, error) { return with((*Conn).Unix) }

// Children lists the sockets a TCP listener holds that no fd owns yet:
// connections in its accept queue and handshakes in progress (state
// SYN_RECV or NEW_SYN_RECV), matched by local address and port; a
// dual-stack listener's IPv4 children are found in the AF_INET6 dump as
// v4-mapped addresses or in the AF_INET dump.
func (c *Conn) Children(l InetSock) ([]InetSock, error) {
	var out []InetSock
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		// Orphans (closed by the application: FIN_WAIT*, LAST_ACK,
		// CLOSING, TIME_WAIT) also have no inode; children do not reach
		// those states before accept().
		ss, err := c.Inet(fam, unix.IPPROTO_TCP, 1<<TCPEstablished|1<<TCPSynRecv|1<<TCPNewSynRecv|1<<TCPCloseWait)
		if err != nil {
			return nil, err
		}
		for _, s := range ss {
			if s.Inode != 0 || s.Local.Port() != l.Local.Port() {
				continue
			}
			if la := l.Local.Addr(); !la.IsUnspecified() && la.Unmap() != s.Local.Addr().Unmap() {
				continue
			}
			out = append(out, s)
		}
	}
	return out, nil
}
