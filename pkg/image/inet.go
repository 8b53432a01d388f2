package image

import (
	"fmt"
	"net/netip"
	"strings"
)

// Values of InetSocket fields (linux/socket.h, linux/in.h, net/tcp_states.h).
const (
	AFInet         = 2
	AFInet6        = 10
	IPProtoTCP     = 6
	IPProtoMPTCP   = 262 // a listener only (format 1.3): Go's listeners are MPTCP by default since Go 1.24
	TCPEstablished = 1
	TCPListen      = 10
)

// Domains of InetSocket fields, from the kernel's own limits.
const (
	maxKeepIdle   = 32767   // MAX_TCP_KEEPIDLE, also MAX_TCP_KEEPINTVL
	maxKeepCnt    = 127     // MAX_TCP_KEEPCNT
	maxWscale     = 14      // TCP_MAX_WSCALE
	maxCongName   = 15      // TCP_CA_NAME_MAX - 1
	maxIfName     = 15      // IFNAMSIZ - 1
	maxBuf        = 1 << 30 // INT_MAX / 2, rounded down
	tcpWindowSize = 20      // struct tcp_repair_window, 5 x u32
	maxWindowSize = 64
	tcpiOptKnown  = 1 | 2 | 4 | 8 // TCPI_OPT_TIMESTAMPS | SACK | WSCALE | ECN
)

// LocalAddr and RemoteAddr parse the socket's addresses.
func (s *InetSocket) LocalAddr() (netip.AddrPort, error) { return netip.ParseAddrPort(s.Local) }

// RemoteAddr parses the peer's address (established connections).
func (s *InetSocket) RemoteAddr() (netip.AddrPort, error) { return netip.ParseAddrPort(s.Remote) }

// Validate says what is wrong with an inet socket record, checking every
// field against its domain, so that restore never feeds the kernel a value
// it did not give (nil if the record is sound).
func (s *InetSocket) Validate() error {
	if err := s.validate(); err != nil {
		return fmt.Errorf("inet socket %d: %w", s.Ino, err)
	}
	return nil
}

func (s *InetSocket) validate() error {
	if s.Family != AFInet && s.Family != AFInet6 {
		return fmt.Errorf("family %d is neither AF_INET (2) nor AF_INET6 (10)", s.Family)
	}
	if s.Protocol != IPProtoTCP && !(s.Protocol == IPProtoMPTCP && s.State == TCPListen) {
		return fmt.Errorf("protocol %d is not TCP (6), nor MPTCP (262) on a listener", s.Protocol)
	}
	addr := func(what, text string) (netip.AddrPort, error) {
		a, err := netip.ParseAddrPort(text)
		if err != nil {
			return a, fmt.Errorf("%s address %q: %w", what, text, err)
		}
		if a.Addr().Zone() != "" {
			return a, fmt.Errorf("%s address %q has a zone", what, text)
		}
		if (s.Family == AFInet) != a.Addr().Is4() {
			return a, fmt.Errorf("%s address %q does not belong to family %d", what, text, s.Family)
		}
		if a.Port() == 0 {
			return a, fmt.Errorf("%s address %q has port 0", what, text)
		}
		return a, nil
	}
	local, err := addr("local", s.Local)
	if err != nil {
		return err
	}
	switch s.State {
	case TCPListen:
		if s.Remote != "" || s.TCP != nil || s.Shutdown != 0 {
			return fmt.Errorf("a listener with a peer, a stream or a shutdown")
		}
		if s.Backlog < 0 || s.Backlog > 1<<16 {
			return fmt.Errorf("backlog %d out of range 0-65536", s.Backlog)
		}
	case TCPEstablished:
		remote, err := addr("remote", s.Remote)
		if err != nil {
			return err
		}
		if local.Addr().Is4In6() != remote.Addr().Is4In6() || local.Addr().IsUnspecified() || remote.Addr().IsUnspecified() {
			return fmt.Errorf("connection %v -> %v mixes IPv4 and IPv6 or has an unspecified address", local, remote)
		}
		if s.Backlog != 0 {
			return fmt.Errorf("a connection with a backlog")
		}
		if s.Shutdown != 0 && s.Shutdown != 1 {
			return fmt.Errorf("shutdown %d on an established connection (only 1, receive, stays established)", s.Shutdown)
		}
		if s.TCP == nil {
			return fmt.Errorf("an established connection without its stream state")
		}
		if err := s.TCP.validate(); err != nil {
			return err
		}
	default:
		return fmt.Errorf("TCP state %d is neither ESTABLISHED (1) nor LISTEN (10)", s.State)
	}
	return s.Options.validate(s.Family)
}

func (o *InetOptions) validate(family int) error {
	rng := func(name string, v, lo, hi int) error {
		if v < lo || v > hi {
			return fmt.Errorf("option %s = %d out of range %d-%d", name, v, lo, hi)
		}
		return nil
	}
	const maxInt = 1<<31 - 1
	for _, c := range []error{
		rng("TCP_KEEPIDLE", o.KeepIdle, 0, maxKeepIdle),
		rng("TCP_KEEPINTVL", o.KeepIntvl, 0, maxKeepIdle),
		rng("TCP_KEEPCNT", o.KeepCnt, 0, maxKeepCnt),
		rng("TCP_DEFER_ACCEPT", o.DeferAccept, 0, maxInt),
		rng("TCP_FASTOPEN", o.FastOpen, 0, maxInt),
		rng("TCP_USER_TIMEOUT", o.UserTimeout, 0, maxInt),
		rng("SO_SNDBUF", o.SndBuf, 0, maxBuf),
		rng("SO_RCVBUF", o.RcvBuf, 0, maxBuf),
		rng("SO_RCVLOWAT", o.RcvLowat, 0, maxInt),
		rng("IP_TOS", o.TOS, 0, 255),
		rng("IPV6_TCLASS", o.TClass, 0, 255),
		rng("SO_PRIORITY", o.Priority, 0, maxInt),
	} {
		if c != nil {
			return c
		}
	}
	if o.Linger != nil {
		if err := rng("SO_LINGER", o.Linger.Seconds, 0, maxInt); err != nil {
			return err
		}
	}
	name := func(opt, v string, max int) error {
		if len(v) > max {
			return fmt.Errorf("option %s = %q longer than %d bytes", opt, v, max)
		}
		for _, c := range []byte(v) {
			if c <= ' ' || c >= 0x7f || c == '/' {
				return fmt.Errorf("option %s = %q is not a name", opt, v)
			}
		}
		return nil
	}
	if err := name("TCP_CONGESTION", o.Congestion, maxCongName); err != nil {
		return err
	}
	if err := name("SO_BINDTODEVICE", o.BindToDevice, maxIfName); err != nil {
		return err
	}
	if family == AFInet && (o.V6Only || o.TClass != 0) {
		return fmt.Errorf("IPv6 options on an AF_INET socket")
	}
	return nil
}

func (t *TCPStream) validate() error {
	if t.OptMask&^tcpiOptKnown != 0 {
		return fmt.Errorf("unknown TCP options %#x", t.OptMask)
	}
	if t.MSS == 0 || t.MSS > 65535 {
		return fmt.Errorf("MSS %d out of range 1-65535", t.MSS)
	}
	if t.SndWscale > maxWscale || t.RcvWscale > maxWscale {
		return fmt.Errorf("window scale %d/%d above %d", t.SndWscale, t.RcvWscale, maxWscale)
	}
	if t.OptMask&4 == 0 && (t.SndWscale != 0 || t.RcvWscale != 0) {
		return fmt.Errorf("window scales without the window scale option")
	}
	if t.OptMask&1 == 0 && t.Timestamp != 0 {
		return fmt.Errorf("a timestamp without the timestamp option")
	}
	if int64(t.Unsent) > int64(len(t.SendQueue)) {
		return fmt.Errorf("%d unsent bytes in a send queue of %d", t.Unsent, len(t.SendQueue))
	}
	if len(t.RecvQueue) > maxBuf || len(t.SendQueue) > maxBuf {
		return fmt.Errorf("queues of %d and %d bytes", len(t.RecvQueue), len(t.SendQueue))
	}
	if w := t.Window; w != nil {
		if w.Size < tcpWindowSize || w.Size > maxWindowSize || len(w.Extra) != w.Size-tcpWindowSize {
			return fmt.Errorf("window record of %d bytes with %d extra", w.Size, len(w.Extra))
		}
		// The kernel's own checks (tcp_repair_set_window), against
		// rcv_nxt = InqSeq after the receive queue is written back.
		if after(w.SndWl1, t.InqSeq+w.RcvWnd) || after(w.RcvWup, t.InqSeq) {
			return fmt.Errorf("window snd_wl1 %d / rcv_wup %d beyond rcv_nxt %d + rcv_wnd %d", w.SndWl1, w.RcvWup, t.InqSeq, w.RcvWnd)
		}
	}
	return nil
}

// after is the kernel's after(a, b): a comes after b in sequence space.
func after(a, b uint32) bool { return int32(b-a) < 0 }

// Describe is a one-line summary of the socket for cr show: protocol and
// family, state, addresses, queued bytes, options set.
func (s *InetSocket) Describe() string {
	var b strings.Builder
	b.WriteString("tcp")
	if s.Family == AFInet6 {
		b.WriteString("6")
	}
	if s.Protocol == IPProtoMPTCP {
		b.WriteString(" (mptcp)")
	}
	switch s.State {
	case TCPListen:
		fmt.Fprintf(&b, " LISTEN %s backlog %d", s.Local, s.Backlog)
	case TCPEstablished:
		fmt.Fprintf(&b, " ESTABLISHED %s -> %s", s.Local, s.Remote)
		if t := s.TCP; t != nil {
			fmt.Fprintf(&b, " recv-q %d send-q %d", len(t.RecvQueue), len(t.SendQueue))
			if t.Unsent > 0 {
				fmt.Fprintf(&b, " (%d unsent)", t.Unsent)
			}
		}
		if s.Shutdown&1 != 0 {
			b.WriteString(" shut-rd")
		}
	default:
		fmt.Fprintf(&b, " state %d %s", s.State, s.Local)
	}
	if opts := s.Options.names(); len(opts) > 0 {
		b.WriteString(" [" + strings.Join(opts, " ") + "]")
	}
	return b.String()
}

// names lists the options set, as "name" or "name=value".
func (o *InetOptions) names() []string {
	var out []string
	flag := func(on bool, n string) {
		if on {
			out = append(out, n)
		}
	}
	num := func(v int, n string) {
		if v != 0 {
			out = append(out, fmt.Sprintf("%s=%d", n, v))
		}
	}
	flag(o.ReuseAddr, "reuseaddr")
	flag(o.ReusePort, "reuseport")
	flag(o.KeepAlive, "keepalive")
	num(o.KeepIdle, "keepidle")
	num(o.KeepIntvl, "keepintvl")
	num(o.KeepCnt, "keepcnt")
	flag(o.NoDelay, "nodelay")
	flag(o.Cork, "cork")
	num(o.DeferAccept, "defer_accept")
	num(o.FastOpen, "fastopen")
	num(o.UserTimeout, "user_timeout")
	if o.Congestion != "" {
		out = append(out, "congestion="+o.Congestion)
	}
	num(o.SndBuf, "sndbuf")
	num(o.RcvBuf, "rcvbuf")
	if o.Linger != nil {
		out = append(out, fmt.Sprintf("linger=%d", o.Linger.Seconds))
	}
	num(o.RcvLowat, "rcvlowat")
	flag(o.V6Only, "v6only")
	num(o.TOS, "tos")
	num(o.TClass, "tclass")
	flag(o.FreeBind, "freebind")
	flag(o.Transparent, "transparent")
	if o.BindToDevice != "" {
		out = append(out, "dev="+o.BindToDevice)
	}
	if o.Mark != 0 {
		out = append(out, fmt.Sprintf("mark=%#x", o.Mark))
	}
	num(o.Priority, "priority")
	return out
}
