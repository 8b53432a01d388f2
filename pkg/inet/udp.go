package inet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// UDP options (include/uapi/linux/udp.h) that x/sys lacks or that cr
// refuses when set: they cannot all be read back to be restored.
const (
	udpCork    = 1   // UDP_CORK
	udpEncap   = 100 // UDP_ENCAP
	udpSegment = 103 // UDP_SEGMENT
	udpGRO     = 104 // UDP_GRO
	maxUDPData = 65535
)

// DumpUDP reads a UDP socket (AF_INET or AF_INET6) through cr's copy fd:
// its local and peer addresses (connect(2)), the options it shares with
// TCP (image.InetOptions) and SO_BROADCAST, and the datagrams waiting to
// be read, each with its source address, read without being taken
// (MSG_PEEK stepping with SO_PEEK_OFF, which UDP has since Linux 6.9; put
// back as it was). An option cr does not restore at a non-default value is
// a *RefusedError naming it. Multicast memberships cannot be read back and
// are not kept.
func DumpUDP(fd int, ino uint64) (*image.InetSocket, *image.UDPSocket, error) {
	family, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return nil, nil, fmt.Errorf("getsockopt SO_DOMAIN: %w", err)
	}
	s := &image.InetSocket{Ino: ino, Family: family, Protocol: unix.IPPROTO_UDP}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return nil, nil, fmt.Errorf("getsockname: %w", err)
	}
	s.Local = addrPortOf(sa).String()
	if pa, err := unix.Getpeername(fd); err == nil {
		s.Remote = addrPortOf(pa).String()
		s.State = image.TCPEstablished // UDP uses TCP_ESTABLISHED for a connected socket
	} else if !errors.Is(err, unix.ENOTCONN) {
		return nil, nil, fmt.Errorf("getpeername: %w", err)
	} else {
		s.State = 7 // TCP_CLOSE
	}
	desc := fmt.Sprintf("UDP socket %s", s.Local)
	refused, err := refusedUDPOptions(fd, family)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", desc, err)
	}
	if len(refused) > 0 {
		return nil, nil, &RefusedError{Socket: desc, Reason: fmt.Sprintf("has options cr does not restore: %v", refused)}
	}
	if s.Options, err = readUDPOptions(fd, family); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", desc, err)
	}
	u := &image.UDPSocket{}
	b, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_BROADCAST)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: getsockopt SO_BROADCAST: %w", desc, err)
	}
	u.Broadcast = b != 0
	if u.Datagrams, err = peekDatagrams(fd); err != nil {
		return nil, nil, fmt.Errorf("%s: read queued datagrams: %w", desc, err)
	}
	return s, u, nil
}

func addrPortOf(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	}
	return netip.AddrPort{}
}

func peekDatagrams(fd int) ([]image.Datagram, error) {
	old, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF)
	if err != nil {
		return nil, fmt.Errorf("getsockopt SO_PEEK_OFF: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0); err != nil {
		return nil, fmt.Errorf("setsockopt SO_PEEK_OFF: %w", err)
	}
	defer unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, old)
	var out []image.Datagram
	buf := make([]byte, maxUDPData+1)
	for i := 0; i < 1<<16; i++ {
		n, _, flags, from, err := unix.Recvmsg(fd, buf, nil, unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if errors.Is(err, unix.EAGAIN) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if flags&unix.MSG_TRUNC != 0 {
			return nil, errors.New("a datagram larger than 64 KiB")
		}
		if n == 0 {
			// SO_PEEK_OFF does not step over an empty datagram.
			return nil, errors.New("an empty datagram is queued")
		}
		out = append(out, image.Datagram{From: addrPortOf(from).String(), Data: append([]byte(nil), buf[:n]...)})
	}
	return nil, errors.New("more than 65536 datagrams queued")
}

// readUDPOptions reads the options of image.InetOptions that mean something
// for UDP.
func readUDPOptions(fd, family int) (image.InetOptions, error) {
	var o image.InetOptions
	var firstErr error
	get := func(name string, level, opt int) int {
		v, err := unix.GetsockoptInt(fd, level, opt)
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("getsockopt %s: %w", name, err)
		}
		return v
	}
	if err := readSocketOptions(fd, family, get, &o); err != nil {
		return o, err
	}
	return o, firstErr
}

// refusedUDPOptions is refusedOptions for a UDP socket: the socket and IP
// options of optionChecks (SO_BROADCAST apart, which UDP keeps), and the
// UDP options cr does not restore.
func refusedUDPOptions(fd, family int) ([]string, error) {
	def, err := systemDefaults()
	if err != nil {
		return nil, err
	}
	var out []string
	checks := append([]optionCheck(nil), optionChecks...)
	checks = append(checks,
		optionCheck{name: "UDP_CORK", level: unix.IPPROTO_UDP, opt: udpCork, isDefault: eq(0)},
		optionCheck{name: "UDP_ENCAP", level: unix.IPPROTO_UDP, opt: udpEncap, isDefault: eq(0)},
		optionCheck{name: "UDP_SEGMENT", level: unix.IPPROTO_UDP, opt: udpSegment, isDefault: eq(0)},
		optionCheck{name: "UDP_GRO", level: unix.IPPROTO_UDP, opt: udpGRO, isDefault: eq(0)},
		optionCheck{name: "IP_MULTICAST_TTL", level: unix.SOL_IP, opt: unix.IP_MULTICAST_TTL, isDefault: eq(1)},
		optionCheck{name: "IP_MULTICAST_LOOP", level: unix.SOL_IP, opt: unix.IP_MULTICAST_LOOP, isDefault: eq(1)},
	)
	for _, c := range checks {
		if c.level == unix.SOL_TCP || c.listener || c.opt == unix.SO_BROADCAST && c.level == unix.SOL_SOCKET ||
			c.family != 0 && c.family != family {
			continue
		}
		if c.length {
			var b [64]byte
			buf := b[:]
			if c.opt == unix.SO_GET_FILTER && c.level == unix.SOL_SOCKET {
				buf = nil
			}
			n, err := getsockoptRaw(fd, c.level, c.opt, buf)
			if err != nil {
				return nil, fmt.Errorf("getsockopt %s: %w", c.name, err)
			}
			if n > 0 {
				out = append(out, c.name)
			}
			continue
		}
		v, err := unix.GetsockoptInt(fd, c.level, c.opt)
		if errors.Is(err, unix.ENOPROTOOPT) && c.level == unix.IPPROTO_UDP {
			continue // UDP_ENCAP is write-only on some kernels
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

// RestoreUDP makes a UDP socket from its records, in cr's process, and
// returns its fd (close-on-exec, blocking): options, bind, the queued
// datagrams sent again to it, each from its original source address and
// port (a raw socket writes the IP and UDP headers: IP_HDRINCL, or
// IPPROTO_RAW for IPv6, through loopback), then connect and the remaining
// options. logf reports what is not kept. On error nothing is left open.
func RestoreUDP(s *image.InetSocket, u *image.UDPSocket, logf func(string, ...any)) (fd int, err error) {
	local, err := s.LocalAddr()
	if err != nil {
		return -1, err
	}
	what := "UDP socket " + s.Local
	fd, err = unix.Socket(s.Family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return -1, fmt.Errorf("restore %s: %w", what, err)
	}
	defer func() {
		if err != nil {
			unix.Close(fd)
			fd, err = -1, fmt.Errorf("restore %s: %w", what, err)
		}
	}()
	if err := applyBindOptions(fd, s.Family, &s.Options); err != nil {
		return fd, err
	}
	if local.Port() != 0 || !local.Addr().IsUnspecified() {
		if err := unix.Bind(fd, sockaddr(local, s.Family)); err != nil {
			return fd, fmt.Errorf("bind: %w", err)
		}
	}
	if len(u.Datagrams) > 0 {
		if local.Port() == 0 {
			return fd, errors.New("datagrams queued on a socket with no port")
		}
		if err := refill(fd, s.Family, local, u.Datagrams); err != nil {
			return fd, err
		}
	}
	if s.Remote != "" {
		r, err := s.RemoteAddr()
		if err != nil {
			return fd, err
		}
		if err := unix.Connect(fd, sockaddr(r, s.Family)); err != nil {
			return fd, fmt.Errorf("connect to %s: %w", r, err)
		}
	}
	if u.Broadcast {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_BROADCAST, 1); err != nil {
			return fd, fmt.Errorf("setsockopt SO_BROADCAST: %w", err)
		}
	}
	st := setter{fd: fd}
	st.nonzero("SO_SNDBUF", unix.SOL_SOCKET, unix.SO_SNDBUF, s.Options.SndBuf)
	st.nonzero("SO_RCVBUF", unix.SOL_SOCKET, unix.SO_RCVBUF, s.Options.RcvBuf)
	st.nonzero("SO_RCVLOWAT", unix.SOL_SOCKET, unix.SO_RCVLOWAT, s.Options.RcvLowat)
	st.nonzero("IP_TOS", unix.SOL_IP, unix.IP_TOS, s.Options.TOS)
	if s.Family == unix.AF_INET6 {
		st.nonzero("IPV6_TCLASS", unix.SOL_IPV6, unix.IPV6_TCLASS, s.Options.TClass)
	}
	st.nonzero("SO_PRIORITY", unix.SOL_SOCKET, unix.SO_PRIORITY, s.Options.Priority)
	if st.err != nil {
		return fd, st.err
	}
	if err := applyReuseAddr(fd, &s.Options); err != nil {
		return fd, err
	}
	return fd, nil
}

// refill sends every datagram to the socket fd bound at local from a raw
// socket, with its original source, and waits (up to a second) until the
// socket holds them all.
func refill(fd, family int, local netip.AddrPort, dgs []image.Datagram) error {
	total := 0
	for _, d := range dgs {
		total += len(d.Data) + 1024
	}
	if cur, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF); err == nil && cur < 2*total {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 2*total)
	}
	dst := local.Addr()
	if dst.IsUnspecified() {
		dst = netip.IPv6Loopback()
		if family == unix.AF_INET {
			dst = netip.AddrFrom4([4]byte{127, 0, 0, 1})
		}
	}
	raw := map[bool]int{} // IPv4? -> raw socket
	defer func() {
		for _, r := range raw {
			unix.Close(r)
		}
	}()
	for _, d := range dgs {
		from, err := netip.ParseAddrPort(d.From)
		if err != nil {
			return fmt.Errorf("datagram source %q: %w", d.From, err)
		}
		to := dst
		v4 := from.Addr().Unmap().Is4()
		if v4 {
			from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
			if to.Is6() && !to.Is4In6() {
				to = netip.AddrFrom4([4]byte{127, 0, 0, 1}) // a dual-stack socket bound to ::
			}
			to = to.Unmap()
		}
		r, ok := raw[v4]
		if !ok {
			fam := unix.AF_INET6
			if v4 {
				fam = unix.AF_INET
			}
			if r, err = unix.Socket(fam, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW); err != nil {
				return fmt.Errorf("raw socket to queue datagrams: %w", err)
			}
			raw[v4] = r
		}
		pkt := udpPacket(from, netip.AddrPortFrom(to, local.Port()), d.Data)
		var sa unix.Sockaddr = &unix.SockaddrInet6{Addr: to.As16()}
		if v4 {
			sa = &unix.SockaddrInet4{Addr: to.As4()}
		}
		if err := unix.Sendto(r, pkt, 0, sa); err != nil {
			return fmt.Errorf("queue a datagram from %s: %w", from, err)
		}
	}
	// Loopback delivers in softirq context, normally before sendto returns.
	deadline := time.Now().Add(time.Second)
	for {
		n, err := countDatagrams(fd)
		if err != nil {
			return err
		}
		if n >= len(dgs) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d datagrams arrived", n, len(dgs))
		}
		time.Sleep(time.Millisecond)
	}
}

func countDatagrams(fd int) (int, error) {
	d, err := peekDatagrams(fd)
	return len(d), err
}

// udpPacket is an IP packet (IPv4 header, or IPv6 header) carrying a UDP
// datagram from src to dst (RFC 768, RFC 791, RFC 8200). The IPv4 header
// checksum and id are filled by the kernel (raw(7)); the UDP checksum is
// computed (mandatory over IPv6).
func udpPacket(src, dst netip.AddrPort, data []byte) []byte {
	be := binary.BigEndian
	ulen := 8 + len(data)
	udp := make([]byte, ulen)
	be.PutUint16(udp[0:], src.Port())
	be.PutUint16(udp[2:], dst.Port())
	be.PutUint16(udp[4:], uint16(ulen))
	copy(udp[8:], data)
	s, d := src.Addr().AsSlice(), dst.Addr().AsSlice()
	pseudo := append(append(append([]byte(nil), s...), d...), 0, unix.IPPROTO_UDP, byte(ulen>>8), byte(ulen))
	sum := checksum(append(pseudo, udp...))
	if sum == 0 {
		sum = 0xffff
	}
	be.PutUint16(udp[6:], sum)
	if src.Addr().Is4() {
		h := make([]byte, 20)
		h[0], h[8], h[9] = 0x45, 64, unix.IPPROTO_UDP
		be.PutUint16(h[2:], uint16(20+ulen))
		copy(h[12:], s)
		copy(h[16:], d)
		return append(h, udp...)
	}
	h := make([]byte, 40)
	h[0] = 6 << 4
	be.PutUint16(h[4:], uint16(ulen))
	h[6], h[7] = unix.IPPROTO_UDP, 64
	copy(h[8:], s)
	copy(h[24:], d)
	return append(h, udp...)
}

// checksum is the Internet checksum (RFC 1071).
func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}
