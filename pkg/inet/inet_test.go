package inet_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/inet"
	"github.com/cr-tools/cr/pkg/netlock"
	"github.com/cr-tools/cr/pkg/sockdiag"
	"golang.org/x/sys/unix"
)

func sockFamily(sa unix.Sockaddr) int {
	if _, ok := sa.(*unix.SockaddrInet4); ok {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// dumpListener makes a listener (set applied before bind), dumps it from a
// copy of its fd, closes both and returns the record.
func dumpListener(t *testing.T, fam family, set func(fd int)) *image.InetSocket {
	t.Helper()
	l := socket(t, fam.family)
	defer unix.Close(l)
	if set != nil {
		set(l)
	}
	must(t, unix.Bind(l, fam.addr))
	must(t, unix.Listen(l, 5))
	cp := dup(t, l)
	defer unix.Close(cp)
	rec, err := inet.Dump(cp, nil, inet.DumpOptions{})
	must(t, err)
	if err := rec.Validate(); err != nil {
		t.Fatalf("the record Dump made does not validate: %v", err)
	}
	return rec
}

// TestListenerRoundTrip: dump a listener from a copy of its fd, close it,
// restore it, connect to it.
func TestListenerRoundTrip(t *testing.T) {
	cases := append(families[:len(families):len(families)],
		family{"dualstack", unix.AF_INET6, any6, lo4})
	for _, fam := range cases {
		t.Run(fam.name, func(t *testing.T) {
			rec := dumpListener(t, fam, func(fd int) {
				if fam.name == "dualstack" {
					must(t, unix.SetsockoptInt(fd, unix.SOL_IPV6, unix.IPV6_V6ONLY, 0))
				}
			})
			// Binding a specific IPv6 address makes a socket v6-only.
			if rec.State != image.TCPListen || rec.Backlog != 5 || rec.Family != fam.family || rec.Options.V6Only != (fam.name == "ipv6") {
				t.Fatalf("record: %+v", rec)
			}
			t.Log(rec.Describe())
			fd, err := inet.Restore(rec)
			must(t, err)
			defer unix.Close(fd)
			la, _ := rec.LocalAddr()
			c := socket(t, sockFamily(fam.dial))
			defer unix.Close(c)
			must(t, unix.Connect(c, withPort(fam.dial, int(la.Port()))))
			s, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
			must(t, err)
			unix.Close(s)
			again, err := inet.Dump(fd, nil, inet.DumpOptions{})
			must(t, err)
			if again.Local != rec.Local || again.Backlog != rec.Backlog || again.Options != rec.Options {
				t.Errorf("restored listener: %+v, want %+v", again, rec)
			}
		})
	}
}

// setAll sets every option cr keeps to a non-default value.
func setAll(t *testing.T, fd, fam int, listener bool) {
	set := func(level, opt, v int) {
		t.Helper()
		must(t, unix.SetsockoptInt(fd, level, opt, v))
	}
	set(unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	set(unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	set(unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	set(unix.SOL_TCP, unix.TCP_KEEPIDLE, 77)
	set(unix.SOL_TCP, unix.TCP_KEEPINTVL, 11)
	set(unix.SOL_TCP, unix.TCP_KEEPCNT, 4)
	set(unix.SOL_TCP, unix.TCP_NODELAY, 1)
	set(unix.SOL_TCP, unix.TCP_CORK, 1)
	if listener {
		set(unix.SOL_TCP, unix.TCP_DEFER_ACCEPT, 5)
		set(unix.SOL_TCP, unix.TCP_FASTOPEN, 16)
	}
	set(unix.SOL_TCP, unix.TCP_USER_TIMEOUT, 12345)
	must(t, unix.SetsockoptString(fd, unix.SOL_TCP, unix.TCP_CONGESTION, "reno"))
	set(unix.SOL_SOCKET, unix.SO_SNDBUF, 50000)
	set(unix.SOL_SOCKET, unix.SO_RCVBUF, 60000)
	must(t, unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 7}))
	set(unix.SOL_SOCKET, unix.SO_RCVLOWAT, 10)
	set(unix.SOL_IP, unix.IP_TOS, 0x20)
	if fam == unix.AF_INET6 {
		if listener { // fixed at bind; binding ::1 sets it anyway
			set(unix.SOL_IPV6, unix.IPV6_V6ONLY, 1)
		}
		set(unix.SOL_IPV6, unix.IPV6_TCLASS, 0x40)
	}
	set(unix.SOL_IP, unix.IP_FREEBIND, 1)
	set(unix.SOL_IP, unix.IP_TRANSPARENT, 1)
	must(t, unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, "lo"))
	set(unix.SOL_SOCKET, unix.SO_MARK, 0x42)
	set(unix.SOL_SOCKET, unix.SO_PRIORITY, 3)
}

var allSet = image.InetOptions{
	ReuseAddr: true, ReusePort: true, KeepAlive: true, KeepIdle: 77, KeepIntvl: 11, KeepCnt: 4,
	NoDelay: true, Cork: true, DeferAccept: 7, FastOpen: 16, UserTimeout: 12345, Congestion: "reno",
	SndBuf: 50000, RcvBuf: 60000, Linger: &image.InetLinger{Seconds: 7}, RcvLowat: 10, TOS: 0x20,
	FreeBind: true, Transparent: true, BindToDevice: "lo", Mark: 0x42, Priority: 3,
}

func sameOptions(t *testing.T, what string, got, want image.InetOptions) {
	t.Helper()
	if (got.Linger == nil) != (want.Linger == nil) || got.Linger != nil && *got.Linger != *want.Linger {
		t.Errorf("%s: linger %v, want %v", what, got.Linger, want.Linger)
	}
	got.Linger, want.Linger = nil, nil
	if got != want {
		t.Errorf("%s:\n got  %+v\n want %+v", what, got, want)
	}
}

// TestOptionsRoundTrip: every option of the list set to a non-default value
// on a listener and on a connection is found again after restore.
func TestOptionsRoundTrip(t *testing.T) {
	for _, fam := range families[:2] {
		want := allSet
		if fam.family == unix.AF_INET6 {
			want.V6Only, want.TClass = true, 0x40
		}
		t.Run("listener-"+fam.name, func(t *testing.T) {
			rec := dumpListener(t, fam, func(fd int) { setAll(t, fd, fam.family, true) })
			sameOptions(t, "dumped", rec.Options, want)
			t.Log(rec.Describe())
			fd, err := inet.Restore(rec)
			must(t, err)
			defer unix.Close(fd)
			again, err := inet.Dump(fd, nil, inet.DumpOptions{})
			must(t, err)
			sameOptions(t, "restored", again.Options, want)
		})
		t.Run("connection-"+fam.name, func(t *testing.T) {
			want := want
			want.DeferAccept, want.FastOpen = 0, 0 // listener options
			c, s := connect(t, fam)
			setAll(t, s, fam.family, false)
			name := lock(t, []netlock.Conn{conn(t, s)})
			rec, err := inet.Dump(s, nil, inet.DumpOptions{})
			must(t, err)
			sameOptions(t, "dumped", rec.Options, want)
			must(t, inet.Release(s, rec))
			fd, err := inet.Restore(rec)
			must(t, err)
			again, err := inet.Dump(fd, nil, inet.DumpOptions{})
			must(t, err)
			sameOptions(t, "restored", again.Options, want)
			must(t, inet.Resume(fd, again))
			// SO_LINGER: close waits for the FIN's ACK, so unlock first.
			must(t, netlock.Unlock(name))
			_, err = unix.Write(fd, []byte("x"))
			must(t, err)
			readExactly(t, c, 1, 5*time.Second)
			unix.Close(fd)
		})
	}
}

// connect returns a connected client and accepted server on loopback
// (closed when the test ends, unless the test closes them itself).
func connect(t testing.TB, fam family) (c, s int) {
	t.Helper()
	l := socket(t, fam.family)
	defer unix.Close(l)
	must(t, unix.Bind(l, fam.addr))
	must(t, unix.Listen(l, 1))
	c = socket(t, fam.family)
	closeLater(t, c)
	must(t, unix.Connect(c, withPort(fam.dial, port(t, l))))
	s, _, err := unix.Accept4(l, unix.SOCK_CLOEXEC)
	must(t, err)
	closeLater(t, s)
	return c, s
}

// TestRefusedOptions: each option of the check list, set, is refused by
// name; a fresh listener and connection have none.
func TestRefusedOptions(t *testing.T) {
	on := func(level, opt, v int) func(int) error {
		return func(fd int) error { return unix.SetsockoptInt(fd, level, opt, v) }
	}
	cases := []struct {
		name string
		set  func(fd int) error
	}{
		{"SO_OOBINLINE", on(unix.SOL_SOCKET, unix.SO_OOBINLINE, 1)},
		{"SO_DONTROUTE", on(unix.SOL_SOCKET, unix.SO_DONTROUTE, 1)},
		{"SO_BROADCAST", on(unix.SOL_SOCKET, unix.SO_BROADCAST, 1)},
		{"SO_TIMESTAMP", on(unix.SOL_SOCKET, unix.SO_TIMESTAMP_OLD, 1)},
		{"SO_TIMESTAMPNS", on(unix.SOL_SOCKET, unix.SO_TIMESTAMPNS_OLD, 1)},
		{"SO_TIMESTAMPING", on(unix.SOL_SOCKET, unix.SO_TIMESTAMPING_OLD, unix.SOF_TIMESTAMPING_SOFTWARE)},
		{"SO_PEEK_OFF", on(unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0)},
		{"SO_BUSY_POLL", on(unix.SOL_SOCKET, unix.SO_BUSY_POLL, 50)},
		{"SO_ZEROCOPY", on(unix.SOL_SOCKET, unix.SO_ZEROCOPY, 1)},
		{"SO_MAX_PACING_RATE", on(unix.SOL_SOCKET, unix.SO_MAX_PACING_RATE, 1000000)},
		{"SO_LOCK_FILTER", on(unix.SOL_SOCKET, unix.SO_LOCK_FILTER, 1)},
		{"SO_SELECT_ERR_QUEUE", on(unix.SOL_SOCKET, unix.SO_SELECT_ERR_QUEUE, 1)},
		{"SO_RCVMARK", on(unix.SOL_SOCKET, unix.SO_RCVMARK, 1)},
		{"SO_ATTACH_FILTER", func(fd int) error {
			prog := []unix.SockFilter{{Code: 0x06, K: 0xffff}} // ret #65535
			return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: 1, Filter: &prog[0]})
		}},
		{"SO_RCVTIMEO", func(fd int) error {
			return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 3})
		}},
		{"SO_SNDTIMEO", func(fd int) error {
			return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &unix.Timeval{Sec: 3})
		}},
		{"IP_TTL", on(unix.SOL_IP, unix.IP_TTL, 33)},
		{"IP_RECVERR", on(unix.SOL_IP, unix.IP_RECVERR, 1)},
		{"IP_PKTINFO", on(unix.SOL_IP, unix.IP_PKTINFO, 1)},
		{"IP_RECVTOS", on(unix.SOL_IP, unix.IP_RECVTOS, 1)},
		{"IP_RECVTTL", on(unix.SOL_IP, unix.IP_RECVTTL, 1)},
		{"IP_RECVOPTS", on(unix.SOL_IP, unix.IP_RECVOPTS, 1)},
		{"IP_RETOPTS", on(unix.SOL_IP, unix.IP_RETOPTS, 1)},
		{"IP_MINTTL", on(unix.SOL_IP, unix.IP_MINTTL, 10)},
		{"IP_MTU_DISCOVER", on(unix.SOL_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO)},
		{"IP_OPTIONS", func(fd int) error {
			return unix.SetsockoptString(fd, unix.SOL_IP, unix.IP_OPTIONS, "\x01\x01\x01\x00") // NOPs, EOL
		}},
		{"TCP_NOTSENT_LOWAT", on(unix.SOL_TCP, unix.TCP_NOTSENT_LOWAT, 4096)},
		{"TCP_SYNCNT", on(unix.SOL_TCP, unix.TCP_SYNCNT, 2)},
		{"TCP_LINGER2", on(unix.SOL_TCP, unix.TCP_LINGER2, 5)},
		{"TCP_THIN_LINEAR_TIMEOUTS", on(unix.SOL_TCP, unix.TCP_THIN_LINEAR_TIMEOUTS, 1)},
		{"TCP_SAVE_SYN", on(unix.SOL_TCP, unix.TCP_SAVE_SYN, 1)},
		{"TCP_TX_DELAY", on(unix.SOL_TCP, unix.TCP_TX_DELAY, 10)},
		{"TCP_INQ", on(unix.SOL_TCP, unix.TCP_INQ, 1)},
		{"TCP_FASTOPEN_CONNECT", on(unix.SOL_TCP, unix.TCP_FASTOPEN_CONNECT, 1)},
		{"TCP_FASTOPEN_NO_COOKIE", on(unix.SOL_TCP, unix.TCP_FASTOPEN_NO_COOKIE, 1)},
		{"TCP_WINDOW_CLAMP", on(unix.SOL_TCP, unix.TCP_WINDOW_CLAMP, 10000)},
		{"TCP_MAXSEG", on(unix.SOL_TCP, unix.TCP_MAXSEG, 1000)},
		{"IPV6_UNICAST_HOPS", on(unix.SOL_IPV6, unix.IPV6_UNICAST_HOPS, 9)},
		{"IPV6_RECVERR", on(unix.SOL_IPV6, unix.IPV6_RECVERR, 1)},
		{"IPV6_RECVPKTINFO", on(unix.SOL_IPV6, unix.IPV6_RECVPKTINFO, 1)},
		{"IPV6_RECVTCLASS", on(unix.SOL_IPV6, unix.IPV6_RECVTCLASS, 1)},
		{"IPV6_RECVHOPLIMIT", on(unix.SOL_IPV6, unix.IPV6_RECVHOPLIMIT, 1)},
		{"IPV6_MINHOPCOUNT", on(unix.SOL_IPV6, unix.IPV6_MINHOPCOUNT, 5)},
		{"IPV6_MTU_DISCOVER", on(unix.SOL_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DO)},
	}
	// Fresh sockets: nothing refused.
	for _, fam := range families {
		dumpListener(t, fam, nil)
		_, s := connect(t, fam)
		lock(t, []netlock.Conn{conn(t, s)})
		rec, err := inet.Dump(s, nil, inet.DumpOptions{})
		if err != nil {
			t.Fatalf("%s: fresh connection: %v", fam.name, err)
		}
		must(t, inet.Resume(s, rec))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fam := families[0]
			if strings.HasPrefix(tc.name, "IPV6_") {
				fam = families[1]
			}
			l := socket(t, fam.family)
			defer unix.Close(l)
			if err := tc.set(l); err != nil {
				t.Fatalf("set: %v", err)
			}
			must(t, unix.Bind(l, fam.addr))
			must(t, unix.Listen(l, 1))
			_, err := inet.Dump(l, nil, inet.DumpOptions{})
			var r *inet.RefusedError
			if !errors.As(err, &r) || !strings.Contains(r.Reason, tc.name) {
				t.Fatalf("Dump: %v; want a refusal naming %s", err, tc.name)
			}
		})
	}
}

// TestClosingRefused: a half-closed connection is refused on both ends,
// naming the addresses and the state; nothing is left in repair mode.
func TestClosingRefused(t *testing.T) {
	c, s := connect(t, families[0])
	must(t, unix.Shutdown(s, unix.SHUT_WR))
	readExactly(t, c, 0, time.Second)
	time.Sleep(20 * time.Millisecond) // the FIN's ACK
	for _, fd := range []int{s, c} {
		k := conn(t, fd)
		_, err := inet.Dump(fd, nil, inet.DumpOptions{})
		var r *inet.RefusedError
		if !errors.As(err, &r) || !strings.Contains(err.Error(), k.Local.String()) || !strings.Contains(err.Error(), k.Remote.String()) {
			t.Fatalf("Dump of a closing connection: %v; want a refusal naming %v and %v", err, k.Local, k.Remote)
		}
		t.Log(err)
		if v, _ := unix.GetsockoptInt(fd, unix.SOL_TCP, unix.TCP_REPAIR); v != 0 {
			t.Errorf("repair mode left on after a refusal")
		}
	}
	// The connection still works in the open direction.
	_, err := unix.Write(c, []byte("x"))
	must(t, err)
	readExactly(t, s, 1, time.Second)
}

// TestInFlightRefused: a listener with a connection waiting in accept() is
// refused unless SkipInFlight.
func TestInFlightRefused(t *testing.T) {
	l := socket(t, unix.AF_INET)
	defer unix.Close(l)
	must(t, unix.Bind(l, lo4))
	must(t, unix.Listen(l, 4))
	c := socket(t, unix.AF_INET)
	defer unix.Close(c)
	must(t, unix.Connect(c, withPort(lo4, port(t, l))))
	_, err := inet.Dump(l, nil, inet.DumpOptions{})
	var r *inet.RefusedError
	if !errors.As(err, &r) || !strings.Contains(r.Reason, "accept") {
		t.Fatalf("Dump: %v, want a refusal for the connection waiting in accept()", err)
	}
	if _, err := inet.Dump(l, nil, inet.DumpOptions{SkipInFlight: true}); err != nil {
		t.Fatalf("Dump with SkipInFlight: %v", err)
	}
}

// TestEstablished: a connection whose dumped end has unread data, data
// sent but not acknowledged, data not sent yet (the peer stopped reading:
// its window is full), and whose peer keeps sending through the whole
// checkpoint. The lock holds from before the dump; the original is closed
// quietly; the restored socket carries on: every byte arrives in order in
// both directions, and the peer never sees a reset.
func TestEstablished(t *testing.T) {
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			c, s := connect(t, fam)
			k := conn(t, s)
			const seedC, seedS = 0x5a, 0xa5
			// c -> s: 3000 bytes s leaves unread.
			sentC := 3000
			_, err := unix.Write(c, pattern(seedC, 0, sentC))
			must(t, err)
			readExactly(t, s, 0, 0)
			time.Sleep(20 * time.Millisecond)

			// s -> c: segments that leave s but never reach c (sent,
			// unacknowledged), then a small write Nagle holds back
			// (unsent), then more until s's buffer is full.
			removeIn := dropInput(t, k)
			sentS := 0
			write := func(n int) int {
				w, err := unix.SendmsgN(s, pattern(seedS, sentS, n), nil, nil, unix.MSG_DONTWAIT)
				if err != nil && !errors.Is(err, unix.EAGAIN) {
					t.Fatal(err)
				}
				sentS += max(w, 0)
				return w
			}
			write(2000)
			write(500)
			for i := 0; i < 1000 && write(1<<16) > 0; i++ {
			}
			time.Sleep(20 * time.Millisecond)

			// The peer keeps sending, from before the lock to after
			// the restore.
			var stop atomic.Bool
			var wg sync.WaitGroup
			var peerErr error
			var peerSent atomic.Int64
			peerSent.Store(int64(sentC))
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !stop.Load() {
					off := int(peerSent.Load())
					n, err := unix.SendmsgN(c, pattern(seedC, off, 1000), nil, nil, unix.MSG_DONTWAIT)
					if err != nil && !errors.Is(err, unix.EAGAIN) {
						peerErr = err
						return
					}
					peerSent.Add(int64(max(n, 0)))
					time.Sleep(5 * time.Millisecond)
				}
			}()
			defer func() { stop.Store(true); wg.Wait() }()

			name := lock(t, []netlock.Conn{k})
			removeIn()
			time.Sleep(20 * time.Millisecond)

			ino := func(fd int) uint64 {
				var st unix.Stat_t
				must(t, unix.Fstat(fd, &st))
				return st.Ino
			}(s)
			cp := dup(t, s)
			rec, err := inet.Dump(cp, nil, inet.DumpOptions{})
			must(t, err)
			must(t, rec.Validate())
			tcp := rec.TCP
			t.Log(rec.Describe())
			if tcp.Unsent == 0 || len(tcp.SendQueue)-int(tcp.Unsent) == 0 || len(tcp.RecvQueue) < 3000 {
				t.Fatalf("want unread, unacknowledged and unsent data: recv %d send %d unsent %d",
					len(tcp.RecvQueue), len(tcp.SendQueue), tcp.Unsent)
			}
			if tcp.Window == nil || tcp.Window.Size < 20 || tcp.OptMask != 7 {
				t.Errorf("window %+v opt mask %#x", tcp.Window, tcp.OptMask)
			}
			// The target dies: its fd goes, then cr's copy.
			must(t, unix.Close(s))
			must(t, inet.Release(cp, rec))
			if all, err := sockdiag.TCP(); err != nil || all[ino].Inode != 0 {
				t.Fatalf("the original socket is still there (%v)", err)
			}
			time.Sleep(200 * time.Millisecond) // the peer retransmits into the lock

			s2, err := inet.Restore(rec)
			must(t, err)
			closeLater(t, s2)
			must(t, netlock.Unlock(name))

			// s's stream, all of it, in order, at c.
			got := readExactly(t, c, sentS, 10*time.Second)
			checkStream(t, "stream s -> c", got, pattern(seedS, 0, sentS))
			// c's stream at s2: what s had plus what the peer sent since.
			time.Sleep(50 * time.Millisecond)
			stop.Store(true)
			wg.Wait()
			if peerErr != nil {
				t.Fatalf("the peer's writes failed (reset?): %v", peerErr)
			}
			total := int(peerSent.Load())
			got = readExactly(t, s2, total, 10*time.Second)
			checkStream(t, "stream c -> s", got, pattern(seedC, 0, total))
			// And on: both ways, then an orderly close.
			_, err = unix.Write(s2, []byte("after"))
			must(t, err)
			checkStream(t, "after", readExactly(t, c, 5, 5*time.Second), []byte("after"))
			must(t, unix.Shutdown(s2, unix.SHUT_WR))
			if n, err := unix.Read(c, make([]byte, 1)); n != 0 || err != nil {
				t.Errorf("want EOF at the peer, got %d, %v", n, err)
			}
		})
	}
}

// BenchmarkDumpRestore: dump + restore of N established loopback
// connections with the core functions (one sock_diag dump, Dump each,
// Release, Restore each), the lock held throughout.
func BenchmarkDumpRestore(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				l := socket(b, unix.AF_INET)
				must(b, unix.Bind(l, lo4))
				must(b, unix.Listen(l, 4096))
				srv := make([]int, n)
				conns := make([]netlock.Conn, n)
				var peers []int
				for j := range srv {
					c := socket(b, unix.AF_INET)
					must(b, unix.Connect(c, withPort(lo4, port(b, l))))
					peers = append(peers, c)
					s, _, err := unix.Accept4(l, unix.SOCK_CLOEXEC)
					must(b, err)
					unix.Write(s, []byte("queued"))
					srv[j], conns[j] = s, conn(b, s)
				}
				unix.Close(l)
				name := lock(b, conns)
				b.StartTimer()

				all, err := sockdiag.TCP()
				must(b, err)
				recs := make([]*image.InetSocket, n)
				for j, s := range srv {
					var st unix.Stat_t
					must(b, unix.Fstat(s, &st))
					d := all[st.Ino]
					if recs[j], err = inet.Dump(s, &d, inet.DumpOptions{}); err != nil {
						b.Fatal(err)
					}
				}
				for j, s := range srv {
					must(b, inet.Release(s, recs[j]))
				}
				for j, r := range recs {
					if srv[j], err = inet.Restore(r); err != nil {
						b.Fatal(err)
					}
				}

				b.StopTimer()
				must(b, netlock.Unlock(name))
				for j := range srv {
					unix.Close(srv[j])
					unix.Close(peers[j])
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/op")
		})
	}
}
