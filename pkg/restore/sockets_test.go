package restore_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/dump"
	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/restore"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func startSockets(t *testing.T, args ...string) *testutil.Proc {
	t.Helper()
	testutil.RequireRoot(t)
	return testutil.Start(t, testutil.BuildC(t, "sockets"), args...)
}

// countType counts the image's file records of type typ.
func countType(ck *image.Checkpoint, typ string) int {
	n := 0
	for _, f := range ck.Files {
		if f.Type == typ {
			n++
		}
	}
	return n
}

// TestRoundTripUDP: IPv4 and IPv6 UDP servers on loopback with three
// datagrams each, from three sources, queued at the dump: after the restore
// each datagram is read with its data and its source address and port.
func TestRoundTripUDP(t *testing.T) {
	p := startSockets(t, "udp")
	q, ck := dumpAndRestore(t, p)
	require.Equal(t, 2, countType(ck, image.FileUDP))
	for _, f := range ck.Files {
		if f.Type == image.FileUDP {
			require.Len(t, f.UDP.Datagrams, 3, f.Inet.Local)
		}
	}
	q.Check(t)
	require.Equal(t, 0, q.Stop(t))
}

// TestRoundTripUnixServer: a stream listener at a path with a client of the
// same process connected and accepted, a connection waiting in accept()
// with data, and a pipe read end and a regular file in flight (SCM_RIGHTS,
// held by no process) behind queued bytes: after the restore the server
// reads the bytes with both descriptors (the pipe still holds its data,
// the file its contents), the client reads the reply and its peer name is
// the path, the pending connection is accepted and talks both ways, and a
// new client can connect.
func TestRoundTripUnixServer(t *testing.T) {
	p := startSockets(t, "unixsrv")
	q, ck := dumpAndRestore(t, p)
	inflight := 0
	for _, f := range ck.Files {
		if f.Unix != nil {
			for _, ids := range f.Unix.QueueFds {
				inflight += len(ids)
			}
		}
	}
	require.Equal(t, 2, inflight, "a pipe and a file in flight")
	q.Check(t)
	require.Equal(t, 0, q.Stop(t))
}

// TestUnixSocketFileInTheWay: at restore, something else at a socket's path
// is refused before anything is made, naming the path; a missing path is
// bound again with the dumped mode.
func TestUnixSocketFileInTheWay(t *testing.T) {
	p := startSockets(t, "renamed")
	sock := filepath.Join(p.Dir, "admin.sock")
	require.NoError(t, os.Chmod(sock, 0o640))
	dir := filepath.Join(t.TempDir(), "img")
	_, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: dir})
	require.NoError(t, err)
	p.Kill()
	require.NoError(t, os.Remove(sock))
	require.NoError(t, os.WriteFile(sock, []byte("x"), 0o600))
	_, err = restore.Run(context.Background(), restore.Options{Dir: dir})
	require.Error(t, err)
	require.Contains(t, err.Error(), sock+" is in the way of the unix socket")
	require.NoError(t, os.Remove(sock))
	res, err := restore.Run(context.Background(), restore.Options{Dir: dir})
	require.NoError(t, err)
	q := testutil.Adopt(t, res.Pid, p.Dir)
	var st unix.Stat_t
	require.NoError(t, unix.Lstat(sock, &st))
	require.Equal(t, uint32(unix.S_IFSOCK|0o640), st.Mode)
	q.Check(t)
	require.Equal(t, 0, q.Stop(t))
}

// TestRoundTripUnixDatagrams: datagram and seqpacket socketpairs and a
// named (abstract) datagram server with a connected client, three messages
// queued on each: they come out one by one with their lengths, and the
// client still reaches the server.
func TestRoundTripUnixDatagrams(t *testing.T) {
	p := startSockets(t, "dgram")
	q, _ := dumpAndRestore(t, p)
	q.Check(t)
	require.Equal(t, 0, q.Stop(t))
}

// TestRoundTripRenamedUnixSocket: a listener bound at admin.sock.tmp whose
// file was renamed to admin.sock (as haproxy does) is bound at admin.sock
// after the restore, and -v says so.
func TestRoundTripRenamedUnixSocket(t *testing.T) {
	p := startSockets(t, "renamed")
	dir := filepath.Join(t.TempDir(), "img")
	_, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: dir})
	require.NoError(t, err)
	p.Kill()
	var log bytes.Buffer
	res, err := restore.Run(context.Background(), restore.Options{Dir: dir, Log: &log})
	require.NoError(t, err)
	q := testutil.Adopt(t, res.Pid, p.Dir)
	require.Contains(t, log.String(), "is bound at "+filepath.Join(p.Dir, "admin.sock")+", the name its file has now")
	_, err = os.Stat(filepath.Join(p.Dir, "admin.sock.tmp"))
	require.True(t, os.IsNotExist(err), "nothing at the old name")
	q.Check(t)
	require.Equal(t, 0, q.Stop(t))
}

// TestRoundTripNetlink: a route netlink socket subscribed to IPv4 address
// events keeps its port id and, after the restore, reports 127.0.0.77
// added to lo (removed again on every path).
func TestRoundTripNetlink(t *testing.T) {
	p := startSockets(t, "netlink")
	q, ck := dumpAndRestore(t, p)
	require.Equal(t, 1, countType(ck, image.FileNetlink))
	del := func() { exec.Command("ip", "addr", "del", "127.0.0.77/8", "dev", "lo").Run() }
	del()
	t.Cleanup(del)
	out, err := exec.Command("ip", "addr", "add", "127.0.0.77/8", "dev", "lo").CombinedOutput()
	require.NoError(t, err, "%s", out)
	q.Check(t)
	del()
	require.Equal(t, 0, q.Stop(t))
}

// TestExtUnixDatagram: a datagram socket connected to a socket outside
// the tree is refused without --ext-unix-sk, naming the path; with it, the
// restored socket is connected to that path again and its messages arrive.
func TestExtUnixDatagram(t *testing.T) {
	testutil.RequireRoot(t)
	path := filepath.Join(t.TempDir(), "log")
	srv, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(srv)
	require.NoError(t, unix.Bind(srv, &unix.SockaddrUnix{Name: path}))
	p := startSockets(t, "extdgram", path)
	refused(t, p, "fd 3 is a unix datagram socket connected to "+path+" outside the dumped processes: dump with --ext-unix-sk to reconnect it by path at restore")

	dir := filepath.Join(t.TempDir(), "img")
	_, err = dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: dir, ExtUnixSk: true})
	require.NoError(t, err)
	p.Kill()
	res, err := restore.Run(context.Background(), restore.Options{Dir: dir})
	require.NoError(t, err)
	q := testutil.Adopt(t, res.Pid, p.Dir)
	q.Check(t)
	buf := make([]byte, 16)
	unix.SetsockoptTimeval(srv, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 2})
	n, _, err := unix.Recvfrom(srv, buf, 0)
	require.NoError(t, err)
	require.Equal(t, "ping", string(buf[:n]))
	require.Equal(t, 0, q.Stop(t))
}

// TestExtUnixStreamRefused: a stream socket connected to a listener outside
// the tree is dumped as external and its restore refused without
// --inherit-fd, naming the peer's path.
func TestExtUnixStreamRefused(t *testing.T) {
	testutil.RequireRoot(t)
	path := filepath.Join(t.TempDir(), "journal")
	l, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(l)
	require.NoError(t, unix.Bind(l, &unix.SockaddrUnix{Name: path}))
	require.NoError(t, unix.Listen(l, 4))
	p := startSockets(t, "extstream", path)
	a, _, err := unix.Accept4(l, unix.SOCK_CLOEXEC)
	require.NoError(t, err)
	defer unix.Close(a)
	dir := filepath.Join(t.TempDir(), "img")
	_, err = dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: dir, LeaveRunning: true})
	require.NoError(t, err)
	_, err = restore.Check(dir)
	require.NoError(t, err)
	p.Kill()
	_, err = restore.Run(context.Background(), restore.Options{Dir: dir})
	require.Error(t, err)
	require.Contains(t, err.Error(), "connected to "+path+" (outside the tree)")
	require.Contains(t, err.Error(), "--inherit-fd")
}

// TestSocketsRefused: packet, raw and UDP-Lite sockets are refused, each
// named.
func TestSocketsRefused(t *testing.T) {
	p := startSockets(t, "refused")
	refused(t, p, "fd 3 is a packet socket", "fd 4 is a raw IPv4 socket (protocol 1)", "fd 5 is a UDP-Lite IPv4 socket")
}

// TestRoundTripHAProxy: haproxy (Debian's) with its stats socket, which it
// binds at admin.sock.PID.tmp and renames to admin.sock: after the restore
// the socket answers "show info" at admin.sock. When CI=true a missing
// haproxy fails the test.
func TestRoundTripHAProxy(t *testing.T) {
	testutil.RequireRoot(t)
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("haproxy is not installed (apt-get install haproxy; .ci/run does)")
		}
		t.Skip("haproxy is not installed (apt-get install haproxy)")
	}
	work := t.TempDir()
	sock := filepath.Join(work, "admin.sock")
	cfg := filepath.Join(work, "haproxy.cfg")
	require.NoError(t, os.WriteFile(cfg, []byte("global\n\tstats socket "+sock+" mode 600 level admin\n\tnbthread 2\n"+
		"defaults\n\tmode tcp\n\ttimeout connect 1s\n\ttimeout client 1s\n\ttimeout server 1s\n"), 0o600))
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	require.NoError(t, err)
	defer null.Close()
	pid, err := syscall.ForkExec(bin, []string{"haproxy", "-db", "-f", cfg}, &syscall.ProcAttr{
		Dir: work, Env: []string{"PATH=/usr/bin:/bin"}, Files: []uintptr{null.Fd(), null.Fd(), null.Fd()},
		Sys: &syscall.SysProcAttr{Setsid: true},
	})
	require.NoError(t, err)
	p := testutil.Adopt(t, pid, work)
	showInfo := func() string {
		var out string
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) {
			c, err := net.Dial("unix", sock)
			if err == nil {
				c.SetDeadline(time.Now().Add(2 * time.Second))
				c.Write([]byte("show info\n"))
				b, _ := io.ReadAll(c)
				c.Close()
				if out = string(b); strings.Contains(out, "Name: HAProxy") {
					return out
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("no answer to show info at %s: %q", sock, out)
		return ""
	}
	before := showInfo()
	require.Contains(t, before, "Pid: "+strconv.Itoa(pid))
	dir := filepath.Join(t.TempDir(), "img")
	var log bytes.Buffer
	_, err = dump.Run(context.Background(), dump.Options{Pid: pid, Dir: dir})
	require.NoError(t, err)
	p.Kill()
	res, err := restore.Run(context.Background(), restore.Options{Dir: dir, Log: &log})
	require.NoError(t, err, log.String())
	q := testutil.Adopt(t, res.Pid, work)
	defer q.Kill()
	after := showInfo()
	require.Contains(t, after, "Pid: "+strconv.Itoa(pid))
	require.Contains(t, log.String(), "the name its file has now")
}
