package restore_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
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

// requirePostgres finds Debian's PostgreSQL 15 (the postgresql package
// .ci/run installs), or another build's postgres and initdb side by side:
// with CI=true a missing one fails the test, otherwise it is skipped.
func requirePostgres(t *testing.T) (postgres, initdb string) {
	t.Helper()
	testutil.RequireRoot(t)
	dirs := []string{"/usr/lib/postgresql/15/bin"}
	if more, _ := filepath.Glob("/usr/lib/postgresql/*/bin"); len(more) > 0 {
		dirs = append(dirs, more...)
	}
	if p, err := exec.LookPath("postgres"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			dirs = append(dirs, filepath.Dir(real))
		}
	}
	for _, d := range dirs {
		pg, in := filepath.Join(d, "postgres"), filepath.Join(d, "initdb")
		if _, err := os.Stat(pg); err != nil {
			continue
		}
		if _, err := os.Stat(in); err == nil {
			return pg, in
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("PostgreSQL is not installed (.ci/run installs the postgresql package)")
	}
	t.Skipf("PostgreSQL is not installed (apt-get install postgresql; CI installs it)")
	return "", ""
}

// pgUser is the unprivileged user PostgreSQL runs as: the postgres system
// user of Debian's package, else nobody.
func pgUser(t *testing.T) (uid, gid uint32) {
	for _, name := range []string{"postgres", "nobody"} {
		if u, err := user.Lookup(name); err == nil {
			uid, _ := strconv.Atoi(u.Uid)
			gid, _ := strconv.Atoi(u.Gid)
			return uint32(uid), uint32(gid)
		}
	}
	return 65534, 65534
}

// treePids lists pid and its descendants (from /proc/PID/task/*/children).
func treePids(pid int) []int {
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", out[i]))
		for _, tk := range tasks {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", out[i], tk.Name()))
			for _, f := range strings.Fields(string(b)) {
				if c, err := strconv.Atoi(f); err == nil {
					out = append(out, c)
				}
			}
		}
	}
	sort.Ints(out)
	return out
}

// pgTree maps each pid of the tree to its command line (postgres titles
// its processes: "postgres: checkpointer", ...).
func pgTree(t *testing.T, pid int) map[int]string {
	t.Helper()
	m := map[int]string{}
	for _, p := range treePids(pid) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
		require.NoError(t, err)
		m[p] = strings.TrimRight(strings.ReplaceAll(string(b), "\x00", " "), " ")
	}
	return m
}

// sysvShmOf lists the ids of the SysV shared memory segments pid created
// (/proc/sysvipc/shm: key shmid perms size cpid ...).
func sysvShmOf(pid int) []int {
	b, _ := os.ReadFile("/proc/sysvipc/shm")
	var ids []int
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == strconv.Itoa(pid) {
			id, _ := strconv.Atoi(f[1])
			ids = append(ids, id)
		}
	}
	return ids
}

// TestServerPostgres: a PostgreSQL 15 cluster made by initdb and run as an
// unprivileged user, listening on 127.0.0.1 and in a socket directory,
// with a client session (this process, over TCP) that created a regular
// table and a TEMP table. The postmaster's tree (checkpointer, background
// writer, walwriter, autovacuum launcher, logical replication launcher and
// the session's backend) is dumped with --tcp-established --file-locks,
// killed and restored with --file-locks: every process has its pid again,
// the session still sees its TEMP table and inserts into it, new
// connections over TCP and the unix socket get a new backend forked by the
// restored postmaster and see the regular table, and a fast shutdown
// (SIGINT) ends the cluster cleanly.
func TestServerPostgres(t *testing.T) {
	postgres, initdb := requirePostgres(t)
	uid, gid := pgUser(t)
	cred := &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}

	base, err := os.MkdirTemp("", "cr-pg-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(base) })
	require.NoError(t, os.Chmod(base, 0o755))
	data, sock := filepath.Join(base, "data"), filepath.Join(base, "sock")
	require.NoError(t, os.Mkdir(sock, 0o700))
	require.NoError(t, os.Chown(sock, int(uid), int(gid)))
	require.NoError(t, os.Mkdir(data, 0o700))
	require.NoError(t, os.Chown(data, int(uid), int(gid)))

	env := []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "HOME=" + base}
	cmd := exec.Command(initdb, "-D", data, "--auth=trust", "-U", "cr", "--no-sync", "-E", "UTF8", "--locale=C")
	cmd.Env, cmd.Dir = env, base
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "initdb:\n%s", out)

	// The postmaster, a session leader, with stdout and stderr in base/log.
	port := freePort(t)
	logf, err := os.OpenFile(filepath.Join(base, "log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	require.NoError(t, err)
	defer logf.Close()
	null, err := os.Open(os.DevNull)
	require.NoError(t, err)
	defer null.Close()
	pid, err := syscall.ForkExec(postgres, []string{postgres, "-D", data, "-k", sock, "-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1", "-c", "logging_collector=off", "-c", "fsync=off",
		"-c", "shared_buffers=16MB", "-c", "max_connections=10",
		// no autovacuum worker comes and goes while the tree is compared
		"-c", "autovacuum_naptime=1h"}, &syscall.ProcAttr{
		Dir: base, Env: env, Files: []uintptr{null.Fd(), logf.Fd(), logf.Fd()},
		Sys: &syscall.SysProcAttr{Setsid: true, Credential: cred},
	})
	require.NoError(t, err)
	q := testutil.Adopt(t, pid, base)
	var shm []int
	var conns []*pgConn
	// Kill and clean on every path: the whole tree (postgres's children are
	// session leaders of their own), the clients, the SysV segment.
	t.Cleanup(func() {
		for _, c := range conns {
			c.c.Close()
		}
		for _, p := range treePids(pid) {
			unix.Kill(p, unix.SIGKILL)
		}
		q.Kill()
		for _, p := range treePids(os.Getpid())[1:] {
			testutil.Reap(p, time.Second)
		}
		for _, id := range shm {
			unix.SysvShmCtl(id, unix.IPC_RMID, nil)
		}
	})
	logText := func() string { b, _ := os.ReadFile(filepath.Join(base, "log")); return string(b) }

	addr := fmt.Sprintf("127.0.0.1:%d", port)
	var s *pgConn
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if s, err = pgDial(addr, "cr", "postgres"); err == nil {
			break
		}
		require.True(t, time.Now().Before(deadline), "postgres does not answer on %s: %v\nlog:\n%s", addr, err, logText())
	}
	conns = append(conns, s)
	shm = sysvShmOf(pid)
	query := func(c *pgConn, sql string) [][]string {
		t.Helper()
		rows, err := c.Query(sql)
		require.NoError(t, err, "%s\nlog:\n%s", sql, logText())
		return rows
	}
	query(s, "CREATE TABLE reg(x int); INSERT INTO reg VALUES (1), (2), (3)")
	query(s, "CREATE TEMP TABLE tmp(y text); INSERT INTO tmp VALUES ('before')")
	backend := query(s, "SELECT pg_backend_pid()")[0][0]

	// Wait until every auxiliary process is there.
	want := []string{"checkpointer", "background writer", "walwriter", "autovacuum launcher", "logical replication launcher"}
	var before map[int]string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		before = pgTree(t, pid)
		all := strings.Join(mapValues(before), "\n")
		missing := false
		for _, w := range want {
			missing = missing || !strings.Contains(all, "postgres: "+w)
		}
		if !missing {
			break
		}
		require.True(t, time.Now().Before(deadline), "the postmaster's children: %v", before)
	}
	b, _ := strconv.Atoi(backend)
	require.Contains(t, before, b, "the session's backend is a child of the postmaster")

	dir := filepath.Join(t.TempDir(), "img")
	lock, err := tcpDump(t, dump.Options{Pid: pid, Dir: dir, TCPEstablished: true, FileLocks: true})
	require.NoError(t, err, "dump; log:\n%s", logText())
	require.NotEmpty(t, lock)
	ck, err := image.Load(dir)
	require.NoError(t, err)
	require.ElementsMatch(t, mapKeys(before), ck.Inventory.Pids, "the dumped tree")
	q.Kill()
	reapTree(t, dir)

	res, err := restore.Run(context.Background(), restore.Options{Dir: dir, FileLocks: true})
	require.NoError(t, err, "restore; log:\n%s", logText())
	require.Equal(t, pid, res.Pid)
	requireNoLock(t, lock)
	q = testutil.Adopt(t, pid, base)
	require.Equal(t, before, pgTree(t, pid), "the postmaster and its children, with their pids and titles")

	// The same session: its backend, its TEMP table.
	require.Equal(t, [][]string{{backend}}, query(s, "SELECT pg_backend_pid()"))
	require.Equal(t, [][]string{{"before"}}, query(s, "SELECT y FROM tmp"))
	query(s, "INSERT INTO tmp VALUES ('after'); INSERT INTO reg VALUES (4)")
	require.Equal(t, [][]string{{"before"}, {"after"}}, query(s, "SELECT y FROM tmp ORDER BY y DESC"))

	// New sessions, over TCP and the unix socket: new backends.
	for _, network := range []string{"tcp", "unix"} {
		a := addr
		if network == "unix" {
			a = filepath.Join(sock, fmt.Sprintf(".s.PGSQL.%d", port))
		}
		c, err := pgDialNet(network, a, "cr", "postgres")
		require.NoError(t, err, "a new %s session; log:\n%s", network, logText())
		conns = append(conns, c)
		rows := query(c, "SELECT count(*), sum(x), pg_backend_pid() FROM reg")
		require.Equal(t, []string{"4", "10"}, rows[0][:2], "the regular table from a new %s session", network)
		nb, _ := strconv.Atoi(rows[0][2])
		require.NotContains(t, before, nb)
		_, ppid, _, err := procStatOf(nb)
		require.NoError(t, err)
		require.Equal(t, pid, ppid, "the new backend's parent is the restored postmaster")
		_, err = c.Query("SELECT y FROM tmp")
		require.ErrorContains(t, err, "does not exist", "another session does not see the TEMP table")
		require.NoError(t, c.Close())
	}
	query(s, "CHECKPOINT")

	// A fast shutdown: the postmaster signals its children, collects them
	// (SIGCHLD) and exits 0.
	require.NoError(t, unix.Kill(pid, unix.SIGINT))
	ws := q.Wait(t, 15*time.Second)
	require.Equal(t, 0, ws.ExitStatus(), "postmaster exit; log:\n%s", logText())
	require.Contains(t, logText(), "database system is shut down")
}

func pgDialNet(network, addr, user, db string) (*pgConn, error) {
	if network == "tcp" {
		return pgDial(addr, user, db)
	}
	return pgDialConn(func() (net.Conn, error) { return net.DialTimeout(network, addr, 5*time.Second) }, user, db)
}

// procStatOf reads state, ppid and comm of pid from /proc/PID/stat.
func procStatOf(pid int) (state byte, ppid int, comm string, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, "", err
	}
	s := string(b)
	i, j := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if i < 0 || j < i {
		return 0, 0, "", fmt.Errorf("pid %d: bad stat %q", pid, s)
	}
	f := strings.Fields(s[j+1:])
	if len(f) < 2 {
		return 0, 0, "", fmt.Errorf("pid %d: bad stat %q", pid, s)
	}
	ppid, err = strconv.Atoi(f[1])
	return f[0][0], ppid, s[i+1 : j], err
}

func mapKeys(m map[int]string) []int {
	var ks []int
	for k := range m {
		ks = append(ks, k)
	}
	sort.Ints(ks)
	return ks
}

func mapValues(m map[int]string) []string {
	var vs []string
	for _, k := range mapKeys(m) {
		vs = append(vs, m[k])
	}
	return vs
}
