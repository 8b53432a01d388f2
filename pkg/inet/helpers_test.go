package inet_test

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/netlock"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { testutil.Main(m) }

type family struct {
	name   string
	family int
	addr   unix.Sockaddr // bind address of the listener
	dial   unix.Sockaddr // address clients connect to (port filled in)
}

var (
	lo4      = &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
	lo6      = &unix.SockaddrInet6{Addr: netip.IPv6Loopback().As16()}
	mapped   = &unix.SockaddrInet6{Addr: netip.MustParseAddr("::ffff:127.0.0.1").As16()}
	any6     = &unix.SockaddrInet6{}
	families = []family{
		{"ipv4", unix.AF_INET, lo4, lo4},
		{"ipv6", unix.AF_INET6, lo6, lo6},
		{"mapped", unix.AF_INET6, mapped, mapped},
	}
)

func withPort(sa unix.Sockaddr, port int) unix.Sockaddr {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		c := *a
		c.Port = port
		return &c
	case *unix.SockaddrInet6:
		c := *a
		c.Port = port
		return &c
	}
	return nil
}

func port(t testing.TB, fd int) int {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return a.Port
	case *unix.SockaddrInet6:
		return a.Port
	}
	return 0
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

func socket(t testing.TB, fam int) int {
	t.Helper()
	fd, err := unix.Socket(fam, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

func closeLater(t testing.TB, fd int) {
	t.Cleanup(func() { unix.Close(fd) })
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func dup(t testing.TB, fd int) int {
	c, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	must(t, err)
	return c
}

func conn(t testing.TB, fd int) netlock.Conn {
	l, err := unix.Getsockname(fd)
	must(t, err)
	r, err := unix.Getpeername(fd)
	must(t, err)
	return netlock.Conn{Local: ap(l), Remote: ap(r)}
}

// lock takes a network lock for conns; it is removed (and checked gone)
// when the test ends, whatever happens.
func lock(t testing.TB, conns []netlock.Conn) string {
	t.Helper()
	name, err := netlock.NewName()
	must(t, err)
	must(t, netlock.Lock(name, conns))
	t.Cleanup(func() {
		netlock.Unlock(name)
		names, err := netlock.List()
		must(t, err)
		if slices.Contains(names, name) {
			t.Errorf("network lock %s left behind", name)
		}
	})
	return name
}

// dropInput installs a table that drops c's packets at the input hook only:
// segments leave their sender (sent) but never arrive (unacknowledged).
// The returned function removes it.
func dropInput(t testing.TB, c netlock.Conn) func() {
	t.Helper()
	name := fmt.Sprintf("cr-test-in-%d-%d", c.Local.Port(), c.Remote.Port())
	nc, err := nftables.New()
	must(t, err)
	tab := nc.CreateTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: name})
	accept := nftables.ChainPolicyAccept
	ch := nc.AddChain(&nftables.Chain{Name: "input", Table: tab, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	for _, port := range []uint16{c.Local.Port(), c.Remote.Port()} {
		nc.AddRule(&nftables.Rule{Table: tab, Chain: ch, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{byte(port >> 8), byte(port)}},
			&expr.Verdict{Kind: expr.VerdictDrop},
		}})
	}
	must(t, nc.Flush())
	done := false
	del := func() {
		if done {
			return
		}
		done = true
		nc, err := nftables.New()
		must(t, err)
		nc.DelTable(tab)
		must(t, nc.Flush())
	}
	t.Cleanup(del)
	return del
}

// pattern is n bytes of a stream whose byte i is a function of off+i, so
// that any loss, duplicate or reordering shows.
func pattern(seed byte, off, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		x := off + i
		b[i] = seed ^ byte(x) ^ byte(x>>8)*7 ^ byte(x>>16)*13
	}
	return b
}

// readExactly reads n bytes from fd (blocking with poll) within timeout.
func readExactly(t testing.TB, fd, n int, timeout time.Duration) []byte {
	t.Helper()
	out := make([]byte, 0, n)
	buf := make([]byte, 1<<16)
	deadline := time.Now().Add(timeout)
	for len(out) < n {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("read %d of %d bytes before the timeout", len(out), n)
		}
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(p, int(left.Milliseconds())+1); err != nil && err != unix.EINTR {
			t.Fatal(err)
		}
		if p[0].Revents == 0 {
			continue
		}
		k, err := unix.Read(fd, buf[:min(len(buf), n-len(out))])
		if err != nil || k == 0 {
			t.Fatalf("read after %d of %d bytes: %d, %v", len(out), n, k, err)
		}
		out = append(out, buf[:k]...)
	}
	return out
}

func checkStream(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("%s: %d bytes, want %d; first difference at byte %d", what, len(got), len(want), i)
	}
}
