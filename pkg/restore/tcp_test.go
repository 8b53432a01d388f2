package restore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/dump"
	"github.com/cr-tools/cr/pkg/files"
	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/netlock"
	"github.com/cr-tools/cr/pkg/restore"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

var lockRE = regexp.MustCompile(`network lock (cr-[0-9a-f]+)`)

// tcpDump dumps pid with the TCP options of o and returns the dump's error
// and the network lock it took ("" if none), read from its log.
func tcpDump(t *testing.T, o dump.Options) (string, error) {
	t.Helper()
	var log bytes.Buffer
	o.Log = &log
	_, err := dump.Run(context.Background(), o)
	name := ""
	if m := lockRE.FindStringSubmatch(log.String()); m != nil {
		name = m[1]
		t.Cleanup(func() { netlock.Unlock(name) }) // whatever happens
	}
	return name, err
}

// hasLock tells whether the nf_tables table name exists.
func hasLock(t *testing.T, name string) bool {
	t.Helper()
	names, err := netlock.List()
	require.NoError(t, err)
	for _, n := range names {
		if n == name {
			return true
		}
	}
	return false
}

// requireNoLock fails if the lock name (if any) is still in place.
func requireNoLock(t *testing.T, name string) {
	t.Helper()
	if name != "" {
		require.False(t, hasLock(t, name), "network lock %s left behind", name)
	}
}

// dumpKill dumps p with --tcp-established (and o's other fields), kills
// and reaps the tree, and returns the image and its lock (which must be
// in place).
func dumpKill(t *testing.T, p *testutil.Proc, o dump.Options) (string, string) {
	t.Helper()
	o.Pid, o.Dir, o.TCPEstablished = p.Pid, filepath.Join(t.TempDir(), "img"), true
	lock, err := tcpDump(t, o)
	require.NoError(t, err)
	p.Kill()
	reapTree(t, o.Dir)
	ck, err := image.Load(o.Dir)
	require.NoError(t, err)
	require.Equal(t, lock, ck.Inventory.NetLock, "the image names its lock")
	if lock != "" {
		require.True(t, hasLock(t, lock), "the lock stays after a dump that kills")
	}
	return o.Dir, lock
}

// restoreTCP restores dir and checks the lock is gone and the pid kept.
func restoreTCP(t *testing.T, p *testutil.Proc, dir, lock string, o restore.Options) *testutil.Proc {
	t.Helper()
	o.Dir = dir
	res, err := restore.Run(context.Background(), o)
	require.NoError(t, err)
	require.Equal(t, p.Pid, res.Pid)
	requireNoLock(t, lock)
	q := testutil.Adopt(t, res.Pid, p.Dir)
	q.Info = p.Info
	return q
}

// echo writes msg on c and reads it back.
func echo(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Write([]byte(msg))
	require.NoError(t, err)
	buf := make([]byte, len(msg))
	_, err = io.ReadFull(c, buf)
	require.NoError(t, err)
	require.Equal(t, msg, string(buf))
}

func dial(t *testing.T, network, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// TestTCPListeners: an IPv4, an IPv6 (V6ONLY) and a dual-stack [::]
// listener come back on their port, listening, non-blocking, V6ONLY as
// set (checked inside), and serve new IPv4 and IPv6 clients (outside);
// with no connection, no lock is taken.
func TestTCPListeners(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.BuildC(t, "tcp")
	for _, fam := range []string{"4", "6", "dual"} {
		t.Run(fam, func(t *testing.T) {
			p := testutil.Start(t, bin, "serve", fam)
			p.Check(t)
			port := p.Info["port"]
			dir, lock := dumpKill(t, p, dump.Options{})
			require.Empty(t, lock, "no connection, no lock")
			q := restoreTCP(t, p, dir, lock, restore.Options{})
			q.Check(t)
			addrs := map[string][]string{"4": {"127.0.0.1"}, "6": {"::1"}, "dual": {"127.0.0.1", "::1"}}[fam]
			for _, a := range addrs {
				echo(t, dial(t, "tcp", net.JoinHostPort(a, port)), "hello "+a)
			}
			q.Check(t)
		})
	}
}

// TestTCPListenerOptions: every option cr keeps, at a non-default value on
// an IPv4 and an IPv6 listener, reads back the same inside the restored
// process; cr show names them.
func TestTCPListenerOptions(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "tcp"), "opts")
	p.Check(t)
	dir, _ := dumpKill(t, p, dump.Options{})
	ck, err := files.Load(dir)
	require.NoError(t, err)
	var sum bytes.Buffer
	files.WriteSummary(&sum, ck)
	for _, w := range []string{"tcp LISTEN 127.0.0.1:" + p.Info["port4"], "tcp6 LISTEN [::1]:" + p.Info["port6"],
		"reuseport", "keepidle=77", "congestion=reno", "linger=9", "dev=lo", "mark=0x42", "tclass=32", "v6only", "transparent", "freebind"} {
		require.Contains(t, sum.String(), w)
	}
	q := restoreTCP(t, p, dir, "", restore.Options{})
	q.Check(t)
}

// TestTCPEstablishedPeerOutside: a server holding a connection whose peer
// (the test) keeps sending while the server is frozen, dumped, killed and
// restored: without --tcp-established the dump is refused, naming the
// connection and the option, and the pre-flight says the same without a
// lock; with it, the lock holds from the dump to the restore, the
// connection stays up and every byte comes back, in order. No table is
// left.
func TestTCPEstablishedPeerOutside(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "tcp"), "serve", "4")
	c := dial(t, "tcp", "127.0.0.1:"+p.Info["port"])
	echo(t, c, "hello")

	_, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: filepath.Join(t.TempDir(), "img")})
	want := fmt.Sprintf("(TCP connection 127.0.0.1:%s -> %s) is established: dump with --tcp-established to save it (TCP repair)", p.Info["port"], c.LocalAddr())
	require.ErrorContains(t, err, want)
	lock, err := tcpDump(t, dump.Options{Pid: p.Pid, CheckOnly: true, TCPEstablished: true})
	require.NoError(t, err)
	require.Empty(t, lock, "the pre-flight takes no lock")
	p.Check(t)
	echo(t, c, "still there")

	// The sender writes numbered lines for ~1 s; the reader checks the echo.
	const lines = 300
	var sent, got bytes.Buffer
	var wg sync.WaitGroup
	var werr, rerr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; i < lines; i++ {
			msg := fmt.Sprintf("line %04d\n", i)
			sent.WriteString(msg)
			if _, werr = c.Write([]byte(msg)); werr != nil {
				return
			}
			time.Sleep(3 * time.Millisecond)
		}
	}()
	go func() {
		defer wg.Done()
		c.SetReadDeadline(time.Now().Add(15 * time.Second))
		buf := make([]byte, 10*lines)
		_, rerr = io.ReadFull(c, buf)
		got.Write(buf)
	}()
	time.Sleep(100 * time.Millisecond)
	dir, lock := dumpKill(t, p, dump.Options{})
	require.NotEmpty(t, lock)
	time.Sleep(200 * time.Millisecond) // the peer's segments meet the lock
	q := restoreTCP(t, p, dir, lock, restore.Options{})
	wg.Wait()
	require.NoError(t, werr)
	require.NoError(t, rerr)
	require.Equal(t, sent.String(), got.String(), "every byte echoed, in order")
	echo(t, c, "after")
	q.Check(t)
}

// TestTCPLeaveRunning: --leave-running resumes the connection (repair off)
// and removes the lock.
func TestTCPLeaveRunning(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "tcp"), "serve", "dual")
	c := dial(t, "tcp4", "127.0.0.1:"+p.Info["port"]) // v4-mapped on the server
	echo(t, c, "hello")
	lock, err := tcpDump(t, dump.Options{Pid: p.Pid, Dir: filepath.Join(t.TempDir(), "img"), TCPEstablished: true, LeaveRunning: true})
	require.NoError(t, err)
	require.NotEmpty(t, lock)
	requireNoLock(t, lock)
	echo(t, c, "goes on")
	p.Check(t)
}

// TestTCPInFlight: a connection waiting in the accept queue refuses the
// dump, naming the listener, after the lock was taken for the accepted
// one: the dump undoes it (the accepted connection goes on, no table
// left). With --skip-in-flight the dump goes through; the waiting
// connection is dropped (reset), the accepted one survives.
func TestTCPInFlight(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "tcp"), "serve", "4", "accept1")
	port := p.Info["port"]
	a := dial(t, "tcp", "127.0.0.1:"+port)
	echo(t, a, "accepted")
	b := dial(t, "tcp", "127.0.0.1:"+port) // stays in the accept queue
	time.Sleep(20 * time.Millisecond)

	lock, err := tcpDump(t, dump.Options{Pid: p.Pid, Dir: filepath.Join(t.TempDir(), "img"), TCPEstablished: true})
	require.ErrorContains(t, err, "(TCP listener 127.0.0.1:"+port+") has 1 connection(s) waiting in accept() (in flight): dump with --skip-in-flight to save it without them (they are not restored)")
	require.NotEmpty(t, lock, "the accepted connection was locked")
	requireNoLock(t, lock)
	echo(t, a, "after the refusal")
	p.Check(t)

	dir, lock := dumpKill(t, p, dump.Options{SkipInFlight: true})
	q := restoreTCP(t, p, dir, lock, restore.Options{})
	echo(t, a, "after the restore")
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = b.Read(make([]byte, 1))
	require.Error(t, err, "the connection left in the old accept queue is gone")
	require.False(t, errors.Is(err, os.ErrDeadlineExceeded), "reset, not hanging: %v", err)
	q.Check(t)
}

// TestTCPClientSendQueue: the dumped process is the client, and its send
// queue is full (the test, its peer, does not read: unacknowledged and
// unsent data). After the restore every byte it wrote arrives, in order,
// and it goes on writing.
func TestTCPClientSendQueue(t *testing.T) {
	testutil.RequireRoot(t)
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	p := testutil.Start(t, testutil.BuildC(t, "tcp"), "client", port)
	c, err := l.Accept()
	require.NoError(t, err)
	defer c.Close()
	wrote := p.IntInfo(t, "wrote")
	require.Greater(t, wrote, 100000)

	dir, lock := dumpKill(t, p, dump.Options{})
	ck, err := image.Load(dir)
	require.NoError(t, err)
	queued := 0
	for _, f := range ck.Files {
		if f.Inet != nil && f.Inet.TCP != nil {
			queued = len(f.Inet.TCP.SendQueue)
		}
	}
	require.Greater(t, queued, 0, "the image holds the send queue")
	q := restoreTCP(t, p, dir, lock, restore.Options{})

	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, wrote)
	_, err = io.ReadFull(c, buf)
	require.NoError(t, err)
	for i, b := range buf {
		if want := byte(i*7 + i>>8); b != want {
			t.Fatalf("byte %d is %#x, want %#x", i, b, want)
		}
	}
	n := 0
	for try := 0; try < 50 && n <= wrote; try++ {
		time.Sleep(20 * time.Millisecond)
		q.Check(t) // writes "WROTE n" before its verdict
		log := q.LogText()
		i := strings.LastIndex(log, "WROTE ")
		require.GreaterOrEqual(t, i, 0)
		n, _ = strconv.Atoi(strings.Fields(log[i+len("WROTE "):])[0])
	}
	require.Greater(t, n, wrote, "it goes on writing")
}

// TestTCPHalfClosed: a connection shut down for writing (FIN_WAIT2) is
// refused, naming it; nothing is locked or left.
func TestTCPHalfClosed(t *testing.T) {
	testutil.RequireRoot(t)
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	p := testutil.Start(t, testutil.BuildC(t, "tcp"), "halfclosed", port)
	c, err := l.Accept()
	require.NoError(t, err)
	defer c.Close()
	time.Sleep(20 * time.Millisecond)
	lock, err := tcpDump(t, dump.Options{Pid: p.Pid, Dir: filepath.Join(t.TempDir(), "img"), TCPEstablished: true})
	require.ErrorContains(t, err, fmt.Sprintf("(TCP connection 127.0.0.1:%s -> 127.0.0.1:%s) is in state FIN_WAIT2", p.Info["local"], port))
	requireNoLock(t, lock)
	p.Check(t)
}

// TestTCPPair: a connection between two processes of the tree (both ends
// dumped; the lock covers both directions), with numbers in flight both
// ways; the ping-pong goes on in order after the restore.
func TestTCPPair(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "tcp"), "pair")
	killAtEnd(t, p.IntInfo(t, "child"))
	p.Check(t)
	dir, lock := dumpKill(t, p, dump.Options{})
	require.NotEmpty(t, lock)
	ck, err := image.Load(dir)
	require.NoError(t, err)
	require.Len(t, ck.Processes, 2)
	q := restoreTCP(t, p, dir, lock, restore.Options{})
	q.Check(t)
	time.Sleep(50 * time.Millisecond)
	q.Check(t)
	require.True(t, isAlive(p.IntInfo(t, "child")))
}

func isAlive(pid int) bool { return unix.Kill(pid, 0) == nil }

// killAtEnd kills and reaps pid (a fixture's child, the test's after a
// restore) when the test ends.
func killAtEnd(t *testing.T, pid int) {
	t.Cleanup(func() {
		unix.Kill(pid, unix.SIGKILL)
		testutil.Reap(pid, 2*time.Second)
	})
}

// TestTCPSharedListener: one listener shared by a parent and its child
// (prefork) is one socket after the restore too: both hold the same
// socket inode, and new clients are served.
func TestTCPSharedListener(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "tcp"), "serve", "4", "fork")
	child := p.IntInfo(t, "child")
	killAtEnd(t, child)
	dir, lock := dumpKill(t, p, dump.Options{})
	ck, err := image.Load(dir)
	require.NoError(t, err)
	n := 0
	for _, f := range ck.Files {
		if f.Inet != nil {
			n++
		}
	}
	require.Equal(t, 1, n, "one socket in the image")
	q := restoreTCP(t, p, dir, lock, restore.Options{})
	l1, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/3", q.Pid))
	require.NoError(t, err)
	l2, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/3", child))
	require.NoError(t, err)
	require.Equal(t, l1, l2, "parent and child share the listener")
	for i := 0; i < 4; i++ {
		echo(t, dial(t, "tcp", "127.0.0.1:"+p.Info["port"]), "hello")
	}
	q.Check(t)
}

// TestTCPClose: --tcp-close restores the connection closed: the peer's
// next segment is answered with a reset, the server sees its connection
// ended and serves new clients.
func TestTCPClose(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "tcp"), "serve", "4")
	c := dial(t, "tcp", "127.0.0.1:"+p.Info["port"])
	echo(t, c, "hello")
	dir, lock := dumpKill(t, p, dump.Options{})
	q := restoreTCP(t, p, dir, lock, restore.Options{TCPClose: true})
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte("x"))
	_, err := c.Read(make([]byte, 1))
	require.Error(t, err)
	require.False(t, errors.Is(err, os.ErrDeadlineExceeded), "reset, not hanging: %v", err)
	echo(t, dial(t, "tcp", "127.0.0.1:"+p.Info["port"]), "new client")
	q.Check(t)
}

// TestTCPRestoreFailsKeepsLock: a restore that fails (the listener's port
// is taken) keeps the lock, so that the image restores once the port is
// free, the connection intact; cr network-unlock's job is done by the
// restore then.
func TestTCPRestoreFailsKeepsLock(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "tcp"), "serve", "4")
	c := dial(t, "tcp", "127.0.0.1:"+p.Info["port"])
	echo(t, c, "hello")
	dir, lock := dumpKill(t, p, dump.Options{})
	squat, err := net.Listen("tcp4", "127.0.0.1:"+p.Info["port"])
	require.NoError(t, err)
	_, err = restore.Run(context.Background(), restore.Options{Dir: dir})
	require.ErrorContains(t, err, "bind")
	require.True(t, hasLock(t, lock), "a failed restore keeps the lock")
	squat.Close()
	q := restoreTCP(t, p, dir, lock, restore.Options{})
	echo(t, c, "after")
	q.Check(t)
}
