package sockdiag_test

import (
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/sockdiag"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { testutil.Main(m) }

func ino(t *testing.T, fd int) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func sock(t *testing.T, family, typ int) int {
	t.Helper()
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func addrPort(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	}
	return netip.AddrPort{}
}

// TestTCP: a listener with one connection waiting in accept() and an
// accepted connection with unread data, as sock_diag sees them.
func TestTCP(t *testing.T) {
	for _, tc := range []struct {
		name   string
		family int
		addr   unix.Sockaddr
	}{
		{"ipv4", unix.AF_INET, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}},
		{"ipv6", unix.AF_INET6, &unix.SockaddrInet6{Addr: netip.IPv6Loopback().As16()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := sock(t, tc.family, unix.SOCK_STREAM)
			if tc.family == unix.AF_INET6 {
				if err := unix.SetsockoptInt(l, unix.SOL_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
					t.Fatal(err)
				}
			}
			if err := unix.Bind(l, tc.addr); err != nil {
				t.Fatal(err)
			}
			if err := unix.Listen(l, 7); err != nil {
				t.Fatal(err)
			}
			la, _ := unix.Getsockname(l)
			c := sock(t, tc.family, unix.SOCK_STREAM)
			if err := unix.SetsockoptInt(c, unix.SOL_SOCKET, unix.SO_MARK, 0x42); err != nil {
				t.Fatal(err)
			}
			if err := unix.Connect(c, la); err != nil {
				t.Fatal(err)
			}
			pending := sock(t, tc.family, unix.SOCK_STREAM)
			if err := unix.Connect(pending, la); err != nil {
				t.Fatal(err)
			}
			s, _, err := unix.Accept4(l, unix.SOCK_CLOEXEC)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { unix.Close(s) })
			if _, err := unix.Write(s, make([]byte, 100)); err != nil {
				t.Fatal(err)
			}

			d, err := sockdiag.Dial()
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			var all map[uint64]sockdiag.InetSock
			// The 100 bytes reach c's queue at once on loopback, but
			// let the ACK settle: retry a few dumps.
			for i := 0; i < 50; i++ {
				if all, err = d.TCP(); err != nil {
					t.Fatal(err)
				}
				if all[ino(t, c)].RQueue == 100 {
					break
				}
			}
			ls, ok := all[ino(t, l)]
			if !ok {
				t.Fatalf("listener (inode %d) not in the dump", ino(t, l))
			}
			if ls.State != sockdiag.TCPListen || ls.Backlog() != 7 || ls.AcceptQueue() != 1 || ls.Local != addrPort(la) || int(ls.Family) != tc.family {
				t.Errorf("listener: %+v", ls)
			}
			if tc.family == unix.AF_INET6 && ls.V6Only != 1 {
				t.Errorf("listener V6Only = %d, want 1", ls.V6Only)
			}
			kids, err := d.Children(ls)
			if err != nil {
				t.Fatal(err)
			}
			ca, _ := unix.Getsockname(pending)
			if len(kids) != 1 || kids[0].Remote != addrPort(ca) {
				t.Errorf("children of the listener: %+v, want one from %v", kids, addrPort(ca))
			}
			cs, ok := all[ino(t, c)]
			if !ok {
				t.Fatal("client not in the dump")
			}
			cl, _ := unix.Getsockname(c)
			if cs.State != sockdiag.TCPEstablished || cs.Local != addrPort(cl) || cs.Remote != addrPort(la) || cs.RQueue != 100 || cs.WQueue != 0 {
				t.Errorf("client: %+v", cs)
			}
			if !cs.HasMark || cs.Mark != 0x42 {
				t.Errorf("client mark %#x (sent %v), want 0x42", cs.Mark, cs.HasMark)
			}
			if cs.Congestion == "" || cs.TOS != 0 {
				t.Errorf("client congestion %q tos %d", cs.Congestion, cs.TOS)
			}
			info, err := sockdiag.ParseTCPInfo(cs.Info)
			if err != nil {
				t.Fatal(err)
			}
			want := sockdiag.TCPIOptTimestamps | sockdiag.TCPIOptSACK | sockdiag.TCPIOptWscale
			if info.State != sockdiag.TCPEstablished || info.Options&uint8(want) != uint8(want) || info.SndWscale == 0 || info.RcvWscale == 0 {
				t.Errorf("client tcp_info: %+v", info)
			}
			raw, err := unix.GetsockoptTCPInfo(c, unix.SOL_TCP, unix.TCP_INFO)
			if err != nil {
				t.Fatal(err)
			}
			if raw.Snd_mss != info.SndMSS || raw.Rcv_mss != info.RcvMSS {
				t.Errorf("tcp_info mss %d/%d, getsockopt says %d/%d", info.SndMSS, info.RcvMSS, raw.Snd_mss, raw.Rcv_mss)
			}

			// Shutdown as both ends see it.
			if err := unix.Shutdown(s, unix.SHUT_WR); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 50; i++ {
				if all, err = d.TCP(); err != nil {
					t.Fatal(err)
				}
				if all[ino(t, c)].Shutdown == sockdiag.ShutdownRecv {
					break
				}
			}
			if got := all[ino(t, s)]; got.Shutdown != sockdiag.ShutdownSend || got.State != sockdiag.TCPFinWait2 && got.State != sockdiag.TCPFinWait1 {
				t.Errorf("server after SHUT_WR: shutdown %d state %s", got.Shutdown, sockdiag.StateName(got.State))
			}
			if got := all[ino(t, c)]; got.Shutdown != sockdiag.ShutdownRecv || got.State != sockdiag.TCPCloseWait {
				t.Errorf("client after the peer's FIN: shutdown %d state %s", got.Shutdown, sockdiag.StateName(got.State))
			}
		})
	}
}

// TestUnix: a socket pair with queued bytes and a shut-down end, a bound
// listener with a connection waiting, an abstract name.
func TestUnix(t *testing.T) {
	p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	if _, err := unix.Write(p[0], []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Shutdown(p[0], unix.SHUT_WR); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "sock")
	l := sock(t, unix.AF_UNIX, unix.SOCK_STREAM)
	if err := unix.Bind(l, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(l, 3); err != nil {
		t.Fatal(err)
	}
	c := sock(t, unix.AF_UNIX, unix.SOCK_STREAM)
	if err := unix.Connect(c, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	abs := sock(t, unix.AF_UNIX, unix.SOCK_DGRAM)
	if err := unix.Bind(abs, &unix.SockaddrUnix{Name: "@cr-sockdiag-test"}); err != nil {
		t.Fatal(err)
	}

	all, err := sockdiag.Unix()
	if err != nil {
		t.Fatal(err)
	}
	a, b := all[ino(t, p[0])], all[ino(t, p[1])]
	if a.Peer != uint32(ino(t, p[1])) || b.Peer != uint32(ino(t, p[0])) || a.Type != unix.SOCK_STREAM || a.Name != "" {
		t.Errorf("socket pair: %+v / %+v", a, b)
	}
	if a.Shutdown != sockdiag.ShutdownSend || b.Shutdown != sockdiag.ShutdownRecv {
		t.Errorf("shutdown: %d / %d, want 2 / 1", a.Shutdown, b.Shutdown)
	}
	if !b.HasRQLen || b.RQueue != 5 {
		t.Errorf("reader's queue: %d (sent %v), want 5", b.RQueue, b.HasRQLen)
	}
	ls := all[ino(t, l)]
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if ls.Name != path || ls.VFS == nil || uint64(ls.VFS.Ino) != st.Ino || ls.State != sockdiag.TCPListen || ls.RQueue != 1 || ls.WQueue != 3 {
		t.Errorf("listener: %+v (vfs %+v), want name %q ino %d, 1 pending, backlog 3", ls, ls.VFS, path, st.Ino)
	}
	if len(ls.Icons) != 1 || uint64(ls.Icons[0]) != ino(t, c) {
		t.Errorf("listener icons %v, want the waiting client %d", ls.Icons, ino(t, c))
	}
	if got := all[ino(t, abs)]; got.Name != "\x00cr-sockdiag-test" || got.Type != unix.SOCK_DGRAM || got.VFS != nil {
		t.Errorf("abstract socket: %+v", got)
	}
}
