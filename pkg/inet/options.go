package inet

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// SO_BUF_LOCK bits (include/net/sock.h).
const (
	sndBufLock = 1 // SOCK_SNDBUF_LOCK
	rcvBufLock = 2 // SOCK_RCVBUF_LOCK
)

// readOptions reads the options cr keeps (image.InetOptions). It runs
// before repair mode is turned on (TCP_REPAIR overwrites SO_REUSEADDR).
func readOptions(fd, family int) (image.InetOptions, error) {
	var o image.InetOptions
	def, err := systemDefaults()
	if err != nil {
		return o, err
	}
	var firstErr error
	get := func(name string, level, opt int) int {
		v, err := unix.GetsockoptInt(fd, level, opt)
		if errors.Is(err, unix.EOPNOTSUPP) {
			// Not an option of this socket (an MPTCP listener has a
			// subset of TCP's): it cannot have been set either.
			return 0
		}
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("getsockopt %s: %w", name, err)
		}
		return v
	}
	if err := readSocketOptions(fd, family, get, &o); err != nil {
		return o, err
	}
	o.KeepAlive = get("SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE) != 0
	if v := get("TCP_KEEPIDLE", unix.SOL_TCP, unix.TCP_KEEPIDLE); v != def.keepIdle {
		o.KeepIdle = v
	}
	if v := get("TCP_KEEPINTVL", unix.SOL_TCP, unix.TCP_KEEPINTVL); v != def.keepIntvl {
		o.KeepIntvl = v
	}
	if v := get("TCP_KEEPCNT", unix.SOL_TCP, unix.TCP_KEEPCNT); v != def.keepCnt {
		o.KeepCnt = v
	}
	o.NoDelay = get("TCP_NODELAY", unix.SOL_TCP, unix.TCP_NODELAY) != 0
	o.Cork = get("TCP_CORK", unix.SOL_TCP, unix.TCP_CORK) != 0
	o.DeferAccept = get("TCP_DEFER_ACCEPT", unix.SOL_TCP, unix.TCP_DEFER_ACCEPT)
	o.FastOpen = get("TCP_FASTOPEN", unix.SOL_TCP, unix.TCP_FASTOPEN)
	o.UserTimeout = get("TCP_USER_TIMEOUT", unix.SOL_TCP, unix.TCP_USER_TIMEOUT)
	if cc, err := unix.GetsockoptString(fd, unix.SOL_TCP, unix.TCP_CONGESTION); err != nil {
		return o, fmt.Errorf("getsockopt TCP_CONGESTION: %w", err)
	} else if cc != def.congestion {
		o.Congestion = cc
	}
	if l, err := unix.GetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER); err != nil {
		return o, fmt.Errorf("getsockopt SO_LINGER: %w", err)
	} else if l.Onoff != 0 {
		o.Linger = &image.InetLinger{Seconds: int(l.Linger)}
	}
	return o, firstErr
}

// readSocketOptions reads into o the socket-level and IP options that every
// inet socket cr saves keeps (TCP's readOptions and UDP's readUDPOptions);
// get reads one int option, remembering its first error.
func readSocketOptions(fd, family int, get func(name string, level, opt int) int, o *image.InetOptions) error {
	o.ReuseAddr = get("SO_REUSEADDR", unix.SOL_SOCKET, unix.SO_REUSEADDR) != 0
	o.ReusePort = get("SO_REUSEPORT", unix.SOL_SOCKET, unix.SO_REUSEPORT) != 0
	lock := get("SO_BUF_LOCK", unix.SOL_SOCKET, unix.SO_BUF_LOCK)
	if lock&sndBufLock != 0 {
		o.SndBuf = get("SO_SNDBUF", unix.SOL_SOCKET, unix.SO_SNDBUF) / 2
	}
	if lock&rcvBufLock != 0 {
		o.RcvBuf = get("SO_RCVBUF", unix.SOL_SOCKET, unix.SO_RCVBUF) / 2
	}
	if v := get("SO_RCVLOWAT", unix.SOL_SOCKET, unix.SO_RCVLOWAT); v != 1 {
		o.RcvLowat = v
	}
	o.TOS = get("IP_TOS", unix.SOL_IP, unix.IP_TOS)
	o.FreeBind = get("IP_FREEBIND", unix.SOL_IP, unix.IP_FREEBIND) != 0
	o.Transparent = get("IP_TRANSPARENT", unix.SOL_IP, unix.IP_TRANSPARENT) != 0
	if family == unix.AF_INET6 {
		o.V6Only = get("IPV6_V6ONLY", unix.SOL_IPV6, unix.IPV6_V6ONLY) != 0
		o.TClass = get("IPV6_TCLASS", unix.SOL_IPV6, unix.IPV6_TCLASS)
		// IPV6_FREEBIND and IPV6_TRANSPARENT set the same socket flags as
		// their IPv4 twins (inet_test_bit FREEBIND/TRANSPARENT).
	}
	dev, err := unix.GetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE)
	if err != nil {
		return fmt.Errorf("getsockopt SO_BINDTODEVICE: %w", err)
	}
	o.BindToDevice = dev
	o.Mark = uint32(get("SO_MARK", unix.SOL_SOCKET, unix.SO_MARK))
	o.Priority = get("SO_PRIORITY", unix.SOL_SOCKET, unix.SO_PRIORITY)
	return nil
}

type setter struct {
	fd  int
	err error
}

func (s *setter) int(name string, level, opt, v int) {
	if s.err == nil {
		if err := unix.SetsockoptInt(s.fd, level, opt, v); err != nil {
			s.err = fmt.Errorf("setsockopt %s=%d: %w", name, v, err)
		}
	}
}

func (s *setter) flag(name string, level, opt int, on bool) {
	if on {
		s.int(name, level, opt, 1)
	}
}

func (s *setter) nonzero(name string, level, opt, v int) {
	if v != 0 {
		s.int(name, level, opt, v)
	}
}

func (s *setter) str(name string, level, opt int, v string) {
	if s.err == nil && v != "" {
		if err := unix.SetsockoptString(s.fd, level, opt, v); err != nil {
			s.err = fmt.Errorf("setsockopt %s=%q: %w", name, v, err)
		}
	}
}

// applyBindOptions sets what must be in place before bind(2): V6ONLY,
// FREEBIND, TRANSPARENT, the device, the mark (routing), and reuse (address
// reuse always on, put back by applyReuseAddr: ports in TIME_WAIT).
func applyBindOptions(fd, family int, o *image.InetOptions) error {
	s := setter{fd: fd}
	if family == unix.AF_INET6 {
		v := 0
		if o.V6Only {
			v = 1
		}
		s.int("IPV6_V6ONLY", unix.SOL_IPV6, unix.IPV6_V6ONLY, v)
	}
	s.int("SO_REUSEADDR", unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	s.flag("SO_REUSEPORT", unix.SOL_SOCKET, unix.SO_REUSEPORT, o.ReusePort)
	s.flag("IP_FREEBIND", unix.SOL_IP, unix.IP_FREEBIND, o.FreeBind)
	s.flag("IP_TRANSPARENT", unix.SOL_IP, unix.IP_TRANSPARENT, o.Transparent)
	s.str("SO_BINDTODEVICE", unix.SOL_SOCKET, unix.SO_BINDTODEVICE, o.BindToDevice)
	s.nonzero("SO_MARK", unix.SOL_SOCKET, unix.SO_MARK, int(o.Mark))
	return s.err
}

// applyReuseAddr puts SO_REUSEADDR back to the saved value (bind forced
// it on; TCP repair on and off overwrites it).
func applyReuseAddr(fd int, o *image.InetOptions) error {
	v := 0
	if o.ReuseAddr {
		v = 1
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, v); err != nil {
		return fmt.Errorf("setsockopt SO_REUSEADDR=%d: %w", v, err)
	}
	return nil
}

// applyOptions sets the remaining options; a zero field is left at the
// new socket's default.
func applyOptions(fd, family int, o *image.InetOptions) error {
	s := setter{fd: fd}
	s.flag("SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, o.KeepAlive)
	s.nonzero("TCP_KEEPIDLE", unix.SOL_TCP, unix.TCP_KEEPIDLE, o.KeepIdle)
	s.nonzero("TCP_KEEPINTVL", unix.SOL_TCP, unix.TCP_KEEPINTVL, o.KeepIntvl)
	s.nonzero("TCP_KEEPCNT", unix.SOL_TCP, unix.TCP_KEEPCNT, o.KeepCnt)
	s.flag("TCP_NODELAY", unix.SOL_TCP, unix.TCP_NODELAY, o.NoDelay)
	s.flag("TCP_CORK", unix.SOL_TCP, unix.TCP_CORK, o.Cork)
	s.nonzero("TCP_DEFER_ACCEPT", unix.SOL_TCP, unix.TCP_DEFER_ACCEPT, o.DeferAccept)
	s.nonzero("TCP_FASTOPEN", unix.SOL_TCP, unix.TCP_FASTOPEN, o.FastOpen)
	s.nonzero("TCP_USER_TIMEOUT", unix.SOL_TCP, unix.TCP_USER_TIMEOUT, o.UserTimeout)
	s.str("TCP_CONGESTION", unix.SOL_TCP, unix.TCP_CONGESTION, o.Congestion)
	s.nonzero("SO_SNDBUF", unix.SOL_SOCKET, unix.SO_SNDBUF, o.SndBuf)
	s.nonzero("SO_RCVBUF", unix.SOL_SOCKET, unix.SO_RCVBUF, o.RcvBuf)
	if o.Linger != nil && s.err == nil {
		if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: int32(o.Linger.Seconds)}); err != nil {
			s.err = fmt.Errorf("setsockopt SO_LINGER=%d: %w", o.Linger.Seconds, err)
		}
	}
	s.nonzero("SO_RCVLOWAT", unix.SOL_SOCKET, unix.SO_RCVLOWAT, o.RcvLowat)
	s.nonzero("IP_TOS", unix.SOL_IP, unix.IP_TOS, o.TOS)
	if family == unix.AF_INET6 {
		s.nonzero("IPV6_TCLASS", unix.SOL_IPV6, unix.IPV6_TCLASS, o.TClass)
	}
	s.nonzero("SO_PRIORITY", unix.SOL_SOCKET, unix.SO_PRIORITY, o.Priority)
	return s.err
}

// An optionCheck is an option cr does not restore: a socket where it is
// not at its default is refused, naming it.
type optionCheck struct {
	name       string
	level, opt int
	family     int  // 0: any; else only sockets of that family
	listener   bool // only listeners (the value means something else on a connection)
	// isDefault says whether the value read (as int) is the default.
	isDefault func(v int, d *sysctls) bool
	// length: check the returned length instead of the value (0 = none).
	length bool
}

func eq(n int) func(int, *sysctls) bool { return func(v int, _ *sysctls) bool { return v == n } }

// optionChecks is the list of options cr detects but does not restore
// (docs/DESIGN.md, "TCP sockets"). Options it cannot read back are not
// here: SO_ATTACH_REUSEPORT_[CE]BPF, TCP_MD5SIG, TCP-AO keys,
// SO_TXTIME's enable bit; TCP_QUICKACK is a transient mode, not kept.
var optionChecks = []optionCheck{
	{name: "SO_OOBINLINE", level: unix.SOL_SOCKET, opt: unix.SO_OOBINLINE, isDefault: eq(0)},
	{name: "SO_DONTROUTE", level: unix.SOL_SOCKET, opt: unix.SO_DONTROUTE, isDefault: eq(0)},
	{name: "SO_BROADCAST", level: unix.SOL_SOCKET, opt: unix.SO_BROADCAST, isDefault: eq(0)},
	{name: "SO_TIMESTAMP", level: unix.SOL_SOCKET, opt: unix.SO_TIMESTAMP_OLD, isDefault: eq(0)},
	{name: "SO_TIMESTAMPNS", level: unix.SOL_SOCKET, opt: unix.SO_TIMESTAMPNS_OLD, isDefault: eq(0)},
	{name: "SO_TIMESTAMPING", level: unix.SOL_SOCKET, opt: unix.SO_TIMESTAMPING_OLD, isDefault: eq(0)},
	{name: "SO_PEEK_OFF", level: unix.SOL_SOCKET, opt: unix.SO_PEEK_OFF, isDefault: eq(-1)},
	{name: "SO_BUSY_POLL", level: unix.SOL_SOCKET, opt: unix.SO_BUSY_POLL, isDefault: func(v int, d *sysctls) bool { return v == d.busyRead }},
	{name: "SO_ZEROCOPY", level: unix.SOL_SOCKET, opt: unix.SO_ZEROCOPY, isDefault: eq(0)},
	{name: "SO_MAX_PACING_RATE", level: unix.SOL_SOCKET, opt: unix.SO_MAX_PACING_RATE, isDefault: eq(-1)},
	{name: "SO_LOCK_FILTER", level: unix.SOL_SOCKET, opt: unix.SO_LOCK_FILTER, isDefault: eq(0)},
	{name: "SO_SELECT_ERR_QUEUE", level: unix.SOL_SOCKET, opt: unix.SO_SELECT_ERR_QUEUE, isDefault: eq(0)},
	{name: "SO_RCVMARK", level: unix.SOL_SOCKET, opt: unix.SO_RCVMARK, isDefault: eq(0)},
	{name: "SO_ATTACH_FILTER", level: unix.SOL_SOCKET, opt: unix.SO_GET_FILTER, length: true},
	{name: "IP_TTL", level: unix.SOL_IP, opt: unix.IP_TTL, isDefault: func(v int, d *sysctls) bool { return v == d.ipTTL }},
	{name: "IP_RECVERR", level: unix.SOL_IP, opt: unix.IP_RECVERR, isDefault: eq(0)},
	{name: "IP_PKTINFO", level: unix.SOL_IP, opt: unix.IP_PKTINFO, isDefault: eq(0)},
	{name: "IP_RECVTOS", level: unix.SOL_IP, opt: unix.IP_RECVTOS, isDefault: eq(0)},
	{name: "IP_RECVTTL", level: unix.SOL_IP, opt: unix.IP_RECVTTL, isDefault: eq(0)},
	{name: "IP_RECVOPTS", level: unix.SOL_IP, opt: unix.IP_RECVOPTS, isDefault: eq(0)},
	{name: "IP_RETOPTS", level: unix.SOL_IP, opt: unix.IP_RETOPTS, isDefault: eq(0)},
	{name: "IP_MINTTL", level: unix.SOL_IP, opt: unix.IP_MINTTL, isDefault: eq(0)},
	{name: "IP_MTU_DISCOVER", level: unix.SOL_IP, opt: unix.IP_MTU_DISCOVER, isDefault: func(v int, d *sysctls) bool {
		if d.noPMTUDisc != 0 {
			return v == unix.IP_PMTUDISC_DONT
		}
		return v == unix.IP_PMTUDISC_WANT
	}},
	{name: "IP_OPTIONS", level: unix.SOL_IP, opt: unix.IP_OPTIONS, length: true},
	{name: "IPV6_UNICAST_HOPS", level: unix.SOL_IPV6, opt: unix.IPV6_UNICAST_HOPS, family: unix.AF_INET6, isDefault: func(v int, d *sysctls) bool { return v == d.hopLimit }},
	{name: "IPV6_RECVERR", level: unix.SOL_IPV6, opt: unix.IPV6_RECVERR, family: unix.AF_INET6, isDefault: eq(0)},
	{name: "IPV6_RECVPKTINFO", level: unix.SOL_IPV6, opt: unix.IPV6_RECVPKTINFO, family: unix.AF_INET6, isDefault: eq(0)},
	{name: "IPV6_RECVTCLASS", level: unix.SOL_IPV6, opt: unix.IPV6_RECVTCLASS, family: unix.AF_INET6, isDefault: eq(0)},
	{name: "IPV6_RECVHOPLIMIT", level: unix.SOL_IPV6, opt: unix.IPV6_RECVHOPLIMIT, family: unix.AF_INET6, isDefault: eq(0)},
	{name: "IPV6_MINHOPCOUNT", level: unix.SOL_IPV6, opt: unix.IPV6_MINHOPCOUNT, family: unix.AF_INET6, isDefault: eq(0)},
	{name: "IPV6_MTU_DISCOVER", level: unix.SOL_IPV6, opt: unix.IPV6_MTU_DISCOVER, family: unix.AF_INET6, isDefault: eq(unix.IPV6_PMTUDISC_WANT)},
	// 0: the sysctl applies; UINT_MAX (-1), the sysctl's default and what a
	// connection accepted by an MPTCP listener (falling back to TCP) gets.
	{name: "TCP_NOTSENT_LOWAT", level: unix.SOL_TCP, opt: unix.TCP_NOTSENT_LOWAT, isDefault: func(v int, _ *sysctls) bool { return v == 0 || v == -1 }},
	{name: "TCP_SYNCNT", level: unix.SOL_TCP, opt: unix.TCP_SYNCNT, isDefault: func(v int, d *sysctls) bool { return v == d.synRetries }},
	{name: "TCP_LINGER2", level: unix.SOL_TCP, opt: unix.TCP_LINGER2, isDefault: func(v int, d *sysctls) bool { return v == d.finTimeout }},
	{name: "TCP_THIN_LINEAR_TIMEOUTS", level: unix.SOL_TCP, opt: unix.TCP_THIN_LINEAR_TIMEOUTS, isDefault: eq(0)},
	{name: "TCP_SAVE_SYN", level: unix.SOL_TCP, opt: unix.TCP_SAVE_SYN, isDefault: eq(0)},
	{name: "TCP_TX_DELAY", level: unix.SOL_TCP, opt: unix.TCP_TX_DELAY, isDefault: eq(0)},
	{name: "TCP_INQ", level: unix.SOL_TCP, opt: unix.TCP_INQ, isDefault: eq(0)},
	{name: "TCP_FASTOPEN_CONNECT", level: unix.SOL_TCP, opt: unix.TCP_FASTOPEN_CONNECT, isDefault: eq(0)},
	{name: "TCP_FASTOPEN_NO_COOKIE", level: unix.SOL_TCP, opt: unix.TCP_FASTOPEN_NO_COOKIE, isDefault: eq(0)},
	{name: "TCP_ULP", level: unix.SOL_TCP, opt: unix.TCP_ULP, length: true},
	{name: "TCP_WINDOW_CLAMP", level: unix.SOL_TCP, opt: unix.TCP_WINDOW_CLAMP, listener: true, isDefault: eq(0)},
	{name: "TCP_MAXSEG", level: unix.SOL_TCP, opt: unix.TCP_MAXSEG, listener: true, isDefault: eq(536)}, // TCP_MSS_DEFAULT until a user_mss
}

// refusedOptions names the options of optionChecks that are not at their
// default on fd.
func refusedOptions(fd, family int, listener bool) ([]string, error) {
	def, err := systemDefaults()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, c := range optionChecks {
		if c.family != 0 && c.family != family || c.listener && !listener {
			continue
		}
		if c.length {
			var b [64]byte
			buf := b[:]
			if c.opt == unix.SO_GET_FILTER && c.level == unix.SOL_SOCKET {
				// Its length counts struct sock_filter entries, not
				// bytes: ask with 0 to get the count alone.
				buf = nil
			}
			n, err := getsockoptRaw(fd, c.level, c.opt, buf)
			if errors.Is(err, unix.EOPNOTSUPP) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("getsockopt %s: %w", c.name, err)
			}
			if c.opt == unix.TCP_ULP && c.level == unix.SOL_TCP && strings.TrimRight(string(buf[:n]), "\x00") == "mptcp" {
				continue // an MPTCP socket's own layer, made by socket(2) again
			}
			if n > 0 {
				out = append(out, c.name)
			}
			continue
		}
		v, err := unix.GetsockoptInt(fd, c.level, c.opt)
		if errors.Is(err, unix.EOPNOTSUPP) {
			continue // not an option of this socket (MPTCP): not set either
		}
		if err != nil {
			return nil, fmt.Errorf("getsockopt %s: %w", c.name, err)
		}
		if !c.isDefault(v, def) {
			out = append(out, c.name)
		}
	}
	return refusedTimeouts(fd, out)
}

// refusedTimeouts appends to out SO_RCVTIMEO and SO_SNDTIMEO if set: cr
// does not restore them (TCP's and UDP's refused-option lists share it).
func refusedTimeouts(fd int, out []string) ([]string, error) {
	for _, o := range []struct {
		name string
		opt  int
	}{{"SO_RCVTIMEO", unix.SO_RCVTIMEO}, {"SO_SNDTIMEO", unix.SO_SNDTIMEO}} {
		tv, err := unix.GetsockoptTimeval(fd, unix.SOL_SOCKET, o.opt)
		if err != nil {
			return nil, fmt.Errorf("getsockopt %s: %w", o.name, err)
		}
		if tv.Sec != 0 || tv.Usec != 0 {
			out = append(out, o.name)
		}
	}
	return out, nil
}
