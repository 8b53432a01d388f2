package files

import (
	"errors"
	"fmt"
	"strings"
	"unsafe"

	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// netlink: a netlink socket ("socket:[INO]") of any protocol (route,
// generic, sock_diag, uevent, ...), record image.NetlinkSocket: protocol,
// type, port id (getsockname) and the multicast groups it joined
// (NETLINK_LIST_MEMBERSHIPS, every group, also those above 32). Restore
// binds a new socket at the same port id and joins the same groups
// (NETLINK_ADD_MEMBERSHIP); if another socket holds the port id by then,
// the kernel picks one and cr says so (-v): programs that compare the
// nlmsg_pid of replies with their own port id read it with getsockname.
// Messages waiting in the socket's queue are not kept (the kernel
// notifications of the moment of the dump).
type netlink struct{}

func (netlink) Type() string { return image.FileNetlink }

func (netlink) Recognize(p *Probe) bool {
	return strings.HasPrefix(p.Target, "socket:") && sockDomain(p) == unix.AF_NETLINK
}

// netlinkListMemberships is NETLINK_LIST_MEMBERSHIPS (linux/netlink.h).
const netlinkListMemberships = 9

func (netlink) Dump(p *Probe, f *image.File) error {
	s, err := CopyFd(p.Pid, p.Fd)
	if err != nil {
		return err
	}
	defer unix.Close(s)
	_, typ, proto := sockKind(p)
	n := &image.NetlinkSocket{Protocol: proto, Type: typ}
	sa, err := unix.Getsockname(s)
	if err != nil {
		return fmt.Errorf("fd %d: netlink getsockname: %w", p.Fd, err)
	}
	if a, ok := sa.(*unix.SockaddrNetlink); ok {
		n.PortID = a.Pid
	}
	buf := make([]byte, 4096)
	l := uint32(len(buf))
	if _, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(s), unix.SOL_NETLINK, netlinkListMemberships,
		uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&l)), 0); e != 0 {
		return fmt.Errorf("fd %d: netlink NETLINK_LIST_MEMBERSHIPS: %w", p.Fd, e)
	}
	if int(l) > len(buf) {
		return fmt.Errorf("fd %d: netlink socket in more than %d groups", p.Fd, 8*len(buf))
	}
	for i := 0; i < int(l)*8; i++ {
		if buf[i/8]&(1<<(i%8)) != 0 {
			n.Groups = append(n.Groups, uint32(i+1))
		}
	}
	n.SndBuf, _ = unix.GetsockoptInt(s, unix.SOL_SOCKET, unix.SO_SNDBUF)
	n.RcvBuf, _ = unix.GetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RCVBUF)
	f.Netlink = n
	return nil
}

func (netlink) Validate(_ *image.Checkpoint, f *image.File) error {
	if err := need(f.Netlink != nil, f, "socket record"); err != nil {
		return err
	}
	n := f.Netlink
	if n.Type != unix.SOCK_RAW && n.Type != unix.SOCK_DGRAM || n.Protocol < 0 || n.Protocol >= 32 {
		return fmt.Errorf("a netlink socket of type %d protocol %d", n.Type, n.Protocol)
	}
	for _, g := range n.Groups {
		if g == 0 || g > 1<<15 {
			return fmt.Errorf("netlink group %d", g)
		}
	}
	return nil
}

func (netlink) Describe(f *image.File) string {
	if f.Netlink == nil {
		return f.Ident.Path
	}
	return fmt.Sprintf("netlink protocol %d port %d groups %v", f.Netlink.Protocol, f.Netlink.PortID, f.Netlink.Groups)
}

func (netlink) Open(o *Opener, f *image.File) (fd int, err error) {
	n := f.Netlink
	fd, err = unix.Socket(unix.AF_NETLINK, n.Type|unix.SOCK_CLOEXEC, n.Protocol)
	if err != nil {
		return -1, fmt.Errorf("netlink socket protocol %d: %w", n.Protocol, err)
	}
	defer func() {
		if err != nil {
			unix.Close(fd)
		}
	}()
	if n.RcvBuf > 0 {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n.RcvBuf/2)
	}
	if n.SndBuf > 0 {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, n.SndBuf/2)
	}
	if n.PortID != 0 {
		err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: n.PortID})
		if errors.Is(err, unix.EADDRINUSE) {
			err = unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
			if err == nil {
				now := uint32(0)
				if sa, e := unix.Getsockname(fd); e == nil {
					now = sa.(*unix.SockaddrNetlink).Pid
				}
				o.Env.Logf("netlink socket (protocol %d): port id %d is taken, it has port id %d now", n.Protocol, n.PortID, now)
			}
		}
		if err != nil {
			return -1, fmt.Errorf("bind netlink socket protocol %d to port id %d: %w", n.Protocol, n.PortID, err)
		}
	}
	for _, g := range n.Groups {
		if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, int(g)); err != nil {
			return -1, fmt.Errorf("netlink socket protocol %d: join group %d: %w", n.Protocol, g, err)
		}
	}
	if err := SetFlags(fd, f.Flags); err != nil {
		return -1, err
	}
	return fd, nil
}
