package files

import (
	"fmt"
	"strings"

	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// otherSocket: every socket no kind before it in the registry takes
// (registry.go lists it last), refused naming its kind: "a packet socket",
// "a raw IPv4 socket", "a TCP/IP (AF_INET) socket", ... It makes nothing.
type otherSocket struct{}

func (otherSocket) Type() string { return "socket-refused" }

func (otherSocket) Recognize(p *Probe) bool { return strings.HasPrefix(p.Target, "socket:") }

func (otherSocket) Dump(p *Probe, _ *image.File) error {
	return &UnsupportedError{Pid: p.Pid, Fd: p.Fd, What: socketKindName(sockKind(p))}
}

func (otherSocket) Validate(_ *image.Checkpoint, f *image.File) error {
	return fmt.Errorf("a %s record, which no image holds", f.Type)
}

func (otherSocket) Open(_ *Opener, f *image.File) (int, error) {
	return 0, fmt.Errorf("file %d: a refused socket", f.ID)
}

// socketKindName names a socket by its domain, type and protocol.
func socketKindName(domain, typ, proto int) string {
	ip := map[int]string{unix.AF_INET: "IPv4", unix.AF_INET6: "IPv6"}[domain]
	switch {
	case domain == unix.AF_PACKET:
		return "a packet socket"
	case ip != "" && typ == unix.SOCK_RAW:
		return fmt.Sprintf("a raw %s socket (protocol %d)", ip, proto)
	case ip != "" && proto == unix.IPPROTO_UDPLITE:
		return fmt.Sprintf("a UDP-Lite %s socket", ip)
	case domain == unix.AF_INET && proto == unix.IPPROTO_TCP:
		return "a TCP/IP (AF_INET) socket"
	case domain == unix.AF_INET6 && proto == unix.IPPROTO_TCP:
		return "a TCP/IPv6 (AF_INET6) socket"
	case ip != "":
		return fmt.Sprintf("an %s socket of type %d, protocol %d", ip, typ, proto)
	case domain == unix.AF_NETLINK:
		return "a netlink socket"
	case domain < 0:
		return "a socket cr cannot read"
	}
	return fmt.Sprintf("a socket of family %d", domain)
}
