package files

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/inet"
	"golang.org/x/sys/unix"
)

// udp: a UDP socket of AF_INET or AF_INET6 ("socket:[INO]"), records
// image.InetSocket (addresses, options; Protocol 17) and image.UDPSocket
// (queued datagrams with their sources, SO_BROADCAST). pkg/inet reads and
// rebuilds it (DumpUDP, RestoreUDP): the datagrams are sent again through
// a raw socket on loopback with their original source address and port, so
// recvfrom reports them as before. UDP-Lite is refused (othersock.go).
type udp struct{}

func (udp) Type() string { return image.FileUDP }

func (udp) Recognize(p *Probe) bool {
	if !strings.HasPrefix(p.Target, "socket:") {
		return false
	}
	d, t, proto := sockKind(p)
	return (d == unix.AF_INET || d == unix.AF_INET6) && t == unix.SOCK_DGRAM && proto == unix.IPPROTO_UDP
}

func (udp) Dump(p *Probe, f *image.File) error {
	s, err := CopyFd(p.Pid, p.Fd)
	if err != nil {
		return err
	}
	defer unix.Close(s)
	in, u, err := inet.DumpUDP(s, p.Ident.Ino)
	var re *inet.RefusedError
	if errors.As(err, &re) {
		return &UnsupportedError{Pid: p.Pid, Fd: p.Fd, What: "a " + re.Error()}
	}
	if err != nil {
		return fmt.Errorf("fd %d: %w", p.Fd, err)
	}
	f.Inet, f.UDP = in, u
	return nil
}

func (udp) Validate(_ *image.Checkpoint, f *image.File) error {
	if err := need(f.Inet != nil && f.UDP != nil, f, "socket records"); err != nil {
		return err
	}
	s := f.Inet
	if s.Family != unix.AF_INET && s.Family != unix.AF_INET6 || s.Protocol != unix.IPPROTO_UDP {
		return fmt.Errorf("a UDP socket of family %d protocol %d", s.Family, s.Protocol)
	}
	addrs := []string{s.Local}
	if s.Remote != "" {
		addrs = append(addrs, s.Remote)
	}
	for _, d := range f.UDP.Datagrams {
		addrs = append(addrs, d.From)
		if len(d.Data) > 65507 {
			return fmt.Errorf("a datagram of %d bytes", len(d.Data))
		}
	}
	for _, a := range addrs {
		ap, err := netip.ParseAddrPort(a)
		if err != nil || ap.Addr().Zone() != "" || s.Family == unix.AF_INET && !ap.Addr().Is4() {
			return fmt.Errorf("UDP socket address %q", a)
		}
	}
	return nil
}

func (udp) Describe(f *image.File) string {
	if f.Inet == nil || f.UDP == nil {
		return f.Ident.Path
	}
	s := "udp"
	if f.Inet.Family == unix.AF_INET6 {
		s += "6"
	}
	s += " " + f.Inet.Local
	if f.Inet.Remote != "" {
		s += " -> " + f.Inet.Remote
	}
	if n := len(f.UDP.Datagrams); n > 0 {
		s += fmt.Sprintf(", %d datagrams queued", n)
	}
	return s
}

func (udp) Open(o *Opener, f *image.File) (int, error) {
	fd, err := inet.RestoreUDP(f.Inet, f.UDP, o.Env.Logf)
	if err != nil {
		return 0, err
	}
	if err := SetFlags(fd, f.Flags); err != nil {
		unix.Close(fd)
		return 0, err
	}
	return fd, nil
}
