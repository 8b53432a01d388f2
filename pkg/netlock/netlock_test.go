package netlock_test

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/netlock"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// pair returns a connected client and server on loopback.
func pair(t *testing.T, family int, addr unix.Sockaddr) (c, s int) {
	t.Helper()
	l, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(l)
	if err := unix.Bind(l, addr); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(l, 1); err != nil {
		t.Fatal(err)
	}
	la, _ := unix.Getsockname(l)
	if c, err = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(c) })
	if err := unix.Connect(c, la); err != nil {
		t.Fatal(err)
	}
	if s, _, err = unix.Accept4(l, unix.SOCK_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(s) })
	return c, s
}

func ap(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	}
	return netip.AddrPort{}
}

func conn(t *testing.T, fd int) netlock.Conn {
	l, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	r, err := unix.Getpeername(fd)
	if err != nil {
		t.Fatal(err)
	}
	return netlock.Conn{Local: ap(l), Remote: ap(r)}
}

func readable(fd int, d time.Duration) bool {
	p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, _ := unix.Poll(p, int(d.Milliseconds()))
	return n > 0
}

// assertGone fails if table name is still there.
func assertGone(t *testing.T, name string) {
	t.Helper()
	names, err := netlock.List()
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(names, name) {
		t.Errorf("network lock %s left behind", name)
		netlock.Unlock(name)
	}
}

// TestLock: a locked connection carries nothing and is not reset; another
// connection is not touched; after Unlock the data arrives.
func TestLock(t *testing.T) {
	for _, tc := range []struct {
		name   string
		family int
		addr   unix.Sockaddr
	}{
		{"ipv4", unix.AF_INET, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}},
		{"ipv6", unix.AF_INET6, &unix.SockaddrInet6{Addr: netip.IPv6Loopback().As16()}},
		{"mapped", unix.AF_INET6, &unix.SockaddrInet6{Addr: netip.MustParseAddr("::ffff:127.0.0.1").As16()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, s := pair(t, tc.family, tc.addr)
			free, freeS := pair(t, tc.family, tc.addr)
			name, err := netlock.NewName()
			if err != nil {
				t.Fatal(err)
			}
			if err := netlock.Lock(name, []netlock.Conn{conn(t, c)}); err != nil {
				t.Fatal(err)
			}
			defer assertGone(t, name)
			locked := true
			defer func() {
				if locked {
					netlock.Unlock(name)
				}
			}()
			names, err := netlock.List()
			if err != nil || !slices.Contains(names, name) {
				t.Fatalf("List() = %v, %v: want %s in it", names, err, name)
			}
			if err := netlock.Lock(name, nil); err == nil {
				t.Error("a second Lock of the same name succeeded")
			}
			if _, err := unix.Write(c, []byte("ping")); err != nil {
				t.Fatal(err)
			}
			if _, err := unix.Write(free, []byte("free")); err != nil {
				t.Fatal(err)
			}
			if !readable(freeS, time.Second) {
				t.Error("a connection outside the lock was blocked")
			}
			if readable(s, 300*time.Millisecond) {
				t.Fatal("data passed the lock")
			}
			if ti, err := unix.GetsockoptTCPInfo(c, unix.SOL_TCP, unix.TCP_INFO); err != nil || ti.State != 1 {
				t.Fatalf("locked sender: state %d, %v; want ESTABLISHED", ti.State, err)
			}
			if err := netlock.Unlock(name); err != nil {
				t.Fatal(err)
			}
			locked = false
			if !readable(s, 3*time.Second) {
				t.Fatal("no data 3 s after unlock")
			}
			b := make([]byte, 8)
			if n, err := unix.Read(s, b); err != nil || string(b[:n]) != "ping" {
				t.Fatalf("read %q, %v; want ping", b[:n], err)
			}
			if err := netlock.Unlock(name); !errors.Is(err, netlock.ErrNoLock) {
				t.Errorf("second Unlock: %v, want ErrNoLock", err)
			}
		})
	}
}

func TestLockRejectsForeignNames(t *testing.T) {
	if err := netlock.Lock("filter", nil); err == nil {
		netlock.Unlock("filter")
		t.Fatal("Lock accepted a name without the cr prefix")
	}
	if err := netlock.Unlock("filter"); err == nil {
		t.Fatal("Unlock accepted a name without the cr prefix")
	}
}
