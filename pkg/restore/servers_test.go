package restore_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/dump"
	"github.com/cr-tools/cr/pkg/restore"
	"github.com/stretchr/testify/require"
)

// Real servers from Debian (installed by .ci/run), each holding a client
// connection (the test, outside the tree) across the checkpoint: dumped
// with --tcp-established, killed, restored, and checked from outside: the
// same pids, the same data, the connection alive, the lock gone.

// requireServer finds a server's binary: with CI=true a missing one fails
// the test, otherwise the test is skipped, saying so.
func requireServer(t *testing.T, name string) string {
	t.Helper()
	testutil.RequireRoot(t)
	path, err := exec.LookPath(name)
	if err != nil {
		for _, d := range []string{"/usr/sbin", "/usr/bin"} {
			if _, serr := os.Stat(filepath.Join(d, name)); serr == nil {
				return filepath.Join(d, name)
			}
		}
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed (.ci/run installs it)", name)
		}
		t.Skipf("%s is not installed (apt-get install %s; CI installs it)", name, name)
	}
	return path
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitDial connects to addr once the server listens there.
func waitDial(t *testing.T, addr string) net.Conn {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			t.Cleanup(func() { c.Close() })
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startServer runs argv as a session leader in dir (stdout and stderr in
// dir/log) and kills its whole group when the test ends.
func startServer(t *testing.T, dir string, argv ...string) *testutil.Proc {
	t.Helper()
	q := startShell(t, dir, "exec "+shellQuote(argv)+" >log 2>&1")
	t.Cleanup(func() { killGroup(q) })
	return q
}

func shellQuote(argv []string) string {
	var out []string
	for _, a := range argv {
		out = append(out, "'"+strings.ReplaceAll(a, "'", `'\''`)+"'")
	}
	return strings.Join(out, " ")
}

// serverRoundTrip dumps the tree of q with --tcp-established (killing
// it), restores it and checks the pids and that the lock is gone.
func serverRoundTrip(t *testing.T, q *testutil.Proc) *testutil.Proc {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "img")
	lock, err := tcpDump(t, dump.Options{Pid: q.Pid, Dir: dir, TCPEstablished: true})
	if err != nil {
		t.Fatalf("dump: %v\nserver log:\n%s", err, readLog(q))
	}
	require.NotEmpty(t, lock)
	require.True(t, hasLock(t, lock))
	q.Kill()
	reapTree(t, dir)
	res, err := restore.Run(context.Background(), restore.Options{Dir: dir})
	require.NoError(t, err)
	require.Equal(t, q.Pid, res.Pid)
	requireNoLock(t, lock)
	r := testutil.Adopt(t, res.Pid, q.Dir)
	t.Cleanup(func() { killGroup(r) })
	return r
}

func readLog(q *testutil.Proc) string {
	b, _ := os.ReadFile(filepath.Join(q.Dir, "log"))
	return string(b)
}

// resp sends one RESP command and returns the reply line (with a bulk
// string's body).
func resp(t *testing.T, c net.Conn, r *bufio.Reader, args ...string) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	_, err := c.Write([]byte(respCmd(args...)))
	require.NoError(t, err)
	return respReply(t, r)
}

func respCmd(args ...string) string {
	s := fmt.Sprintf("*%d\r\n", len(args))
	for _, a := range args {
		s += fmt.Sprintf("$%d\r\n%s\r\n", len(a), a)
	}
	return s
}

func respReply(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	line, err := r.ReadString('\n')
	require.NoError(t, err)
	if strings.HasPrefix(line, "$") && line != "$-1\r\n" {
		n, _ := strconv.Atoi(strings.TrimSpace(line[1:]))
		body := make([]byte, n+2)
		_, err := io.ReadFull(r, body)
		require.NoError(t, err)
		line += string(body)
	}
	return line
}

func startRedis(t *testing.T) (*testutil.Proc, string) {
	bin := requireServer(t, "redis-server")
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	_, port, _ := net.SplitHostPort(addr)
	q := startServer(t, dir, bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--daemonize", "no", "--protected-mode", "no")
	return q, addr
}

// TestServerRedis: redis-server with a client holding its connection
// across the checkpoint: SET before, GET after, on the same connection.
func TestServerRedis(t *testing.T) {
	q, addr := startRedis(t)
	c := waitDial(t, addr)
	r := bufio.NewReader(c)
	require.Equal(t, "+OK\r\n", resp(t, c, r, "SET", "k", "hello"))
	q = serverRoundTrip(t, q)
	require.Equal(t, "$5\r\nhello\r\n", resp(t, c, r, "GET", "k"))
	c2 := waitDial(t, addr)
	require.Equal(t, "$5\r\nhello\r\n", resp(t, c2, bufio.NewReader(c2), "GET", "k"), "a new client")
}

// TestServerRedisSending: the client sends INCR commands all through the
// checkpoint; every reply arrives, in order.
func TestServerRedisSending(t *testing.T) {
	q, addr := startRedis(t)
	c := waitDial(t, addr)
	r := bufio.NewReader(c)
	require.Equal(t, ":1\r\n", resp(t, c, r, "INCR", "n"))
	const n = 300
	var wg sync.WaitGroup
	var werr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < n; i++ {
			if _, werr = c.Write([]byte(respCmd("INCR", "n"))); werr != nil {
				return
			}
			time.Sleep(3 * time.Millisecond)
		}
	}()
	time.Sleep(100 * time.Millisecond)
	q = serverRoundTrip(t, q)
	wg.Wait()
	require.NoError(t, werr)
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	for i := 2; i <= n+1; i++ {
		line, err := r.ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, fmt.Sprintf(":%d\r\n", i), line)
	}
	require.Equal(t, fmt.Sprintf(":%d\r\n", n+2), resp(t, c, r, "INCR", "n"))
}

// TestServerMemcached: memcached -t 4 (four worker threads) keeps a
// client's connection and its data.
func TestServerMemcached(t *testing.T) {
	bin := requireServer(t, "memcached")
	port := freePort(t)
	q := startServer(t, t.TempDir(), bin, "-p", strconv.Itoa(port), "-l", "127.0.0.1", "-U", "0", "-t", "4", "-u", "root")
	c := waitDial(t, fmt.Sprintf("127.0.0.1:%d", port))
	r := bufio.NewReader(c)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "set k 0 0 5\r\nhello\r\n")
	line, err := r.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "STORED\r\n", line)
	serverRoundTrip(t, q)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "get k\r\n")
	var got string
	for !strings.HasSuffix(got, "END\r\n") {
		line, err := r.ReadString('\n')
		require.NoError(t, err)
		got += line
	}
	require.Equal(t, "VALUE k 0 5\r\nhello\r\nEND\r\n", got)
}

// httpGet sends a GET on the kept-alive connection c and returns the body.
func httpGet(t *testing.T, c net.Conn, r *bufio.Reader, host string) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", host)
	res, err := http.ReadResponse(r, nil)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	require.Equal(t, 200, res.StatusCode, string(b))
	return string(b)
}

func children(t *testing.T, pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	require.NoError(t, err)
	return strings.Fields(string(b))
}

// TestServerNginx: nginx, a master and two workers sharing the listening
// socket (one socket in the image, passed to the three), keeps a client's
// kept-alive connection, served by the same worker after the restore, and
// new connections are served by the original workers.
func TestServerNginx(t *testing.T) {
	bin := requireServer(t, "nginx")
	dir := t.TempDir()
	port := freePort(t)
	conf := fmt.Sprintf(`daemon off;
master_process on;
worker_processes 2;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 64; }
http {
	access_log off;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	server {
		listen 127.0.0.1:%[2]d;
		location / { return 200 "pid $pid\n"; }
	}
}
`, dir, port)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644))
	q := startServer(t, dir, bin, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-e", filepath.Join(dir, "error.log"))
	host := fmt.Sprintf("127.0.0.1:%d", port)
	c := waitDial(t, host)
	r := bufio.NewReader(c)
	first := httpGet(t, c, r, host)
	var workers []string
	for deadline := time.Now().Add(5 * time.Second); len(workers) < 2 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		workers = children(t, q.Pid)
	}
	require.Len(t, workers, 2)
	require.Contains(t, workers, strings.TrimSpace(strings.TrimPrefix(first, "pid ")))

	q = serverRoundTrip(t, q)
	require.ElementsMatch(t, workers, children(t, q.Pid), "the same workers")
	require.Equal(t, first, httpGet(t, c, r, host), "the kept-alive connection, served by the same worker")
	for i := 0; i < 4; i++ {
		c2 := waitDial(t, host)
		body := httpGet(t, c2, bufio.NewReader(c2), host)
		require.Contains(t, workers, strings.TrimSpace(strings.TrimPrefix(body, "pid ")))
	}
}

// TestServerPythonHTTP: python3 -m http.server (a thread per connection)
// with a connection open, its request sent only after the restore.
func TestServerPythonHTTP(t *testing.T) {
	bin := requireServer(t, "python3")
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "hello.txt"), []byte("hello from before\n"), 0o644))
	port := freePort(t)
	q := startServer(t, dir, bin, "-m", "http.server", strconv.Itoa(port), "--bind", "127.0.0.1", "--directory", dir)
	host := fmt.Sprintf("127.0.0.1:%d", port)
	warm := waitDial(t, host) // the server has accepted it before the dump
	time.Sleep(100 * time.Millisecond)
	q = serverRoundTrip(t, q)
	warm.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(warm, "GET /hello.txt HTTP/1.0\r\n\r\n")
	b, err := io.ReadAll(warm)
	require.NoError(t, err)
	require.Contains(t, string(b), "200 OK")
	require.Contains(t, string(b), "hello from before")
	c := waitDial(t, host)
	require.Contains(t, httpGet(t, c, bufio.NewReader(c), host), "hello.txt")
}

// TestServerGoHTTP: a Go net/http server (testdata/gohttp) keeps a
// kept-alive connection and its request count.
func TestServerGoHTTP(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.BuildGo(t, "testdata/gohttp")
	dir := t.TempDir()
	portFile := filepath.Join(dir, "port")
	q := startServer(t, dir, bin, portFile)
	var port []byte
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if b, err := os.ReadFile(portFile); err == nil {
			port = b
			break
		}
	}
	require.NotEmpty(t, port)
	host := "127.0.0.1:" + string(port)
	c := waitDial(t, host)
	r := bufio.NewReader(c)
	require.Equal(t, fmt.Sprintf("pid %d hits 1\n", q.Pid), httpGet(t, c, r, host))
	q = serverRoundTrip(t, q)
	require.Equal(t, fmt.Sprintf("pid %d hits 2\n", q.Pid), httpGet(t, c, r, host))
	c2 := waitDial(t, host)
	require.Equal(t, fmt.Sprintf("pid %d hits 3\n", q.Pid), httpGet(t, c2, bufio.NewReader(c2), host))
}
