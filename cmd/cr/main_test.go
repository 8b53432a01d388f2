package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { testutil.Main(m) }

var crBin string

// cr builds the cr binary once and runs it with args.
func cr(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	if crBin == "" {
		crBin = filepath.Join(os.TempDir(), fmt.Sprintf("cr-test-%d", os.Getpid()))
		out, err := exec.Command("go", "build", "-o", crBin, ".").CombinedOutput()
		require.NoError(t, err, string(out))
	}
	cmd := exec.Command(crBin, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code = 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return o.String(), e.String(), code
}

func oneLine(t *testing.T, s string) {
	t.Helper()
	require.Equal(t, 1, strings.Count(s, "\n"), "one line for the user: %q", s)
	require.True(t, strings.HasPrefix(s, "cr: "), s)
}

func TestCLIDumpErrors(t *testing.T) {
	testutil.RequireRoot(t)
	dir := filepath.Join(t.TempDir(), "img")
	_, e, code := cr(t, "dump", "-t", "999999999", "-o", dir)
	require.Equal(t, 1, code)
	oneLine(t, e)
	require.Contains(t, e, "no such process")
	require.NoDirExists(t, dir)

	p := testutil.Start(t, testutil.BuildC(t, "socket"))
	_, e, code = cr(t, "dump", "-t", strconv.Itoa(p.Pid), "-o", dir)
	require.Equal(t, 1, code)
	oneLine(t, e)
	require.Contains(t, e, "fd 3 is a TCP/IP (AF_INET) socket: not supported yet")
	require.NoDirExists(t, dir)
	require.True(t, p.Alive())
	p.Check(t)

	_, e, code = cr(t, "dump", "-t", "1")
	require.Equal(t, 2, code)
	oneLine(t, e)
	_, e, code = cr(t, "frobnicate")
	require.Equal(t, 2, code)
	require.Contains(t, e, "unknown command")
}

func TestCLIShow(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "counter"))
	dir := filepath.Join(t.TempDir(), "img")
	_, e, code := cr(t, "dump", "-t", strconv.Itoa(p.Pid), "-o", dir, "--leave-running")
	require.Equal(t, 0, code, e)
	p.Check(t)
	o, _, code := cr(t, "show", "-i", dir)
	require.Equal(t, 0, code)
	require.Contains(t, o, fmt.Sprintf("process %d (counter", p.Pid))
	require.Contains(t, o, "[vdso]")
	o, _, code = cr(t, "show", "-i", dir, "--json")
	require.Equal(t, 0, code)
	var v map[string]any
	require.NoError(t, json.Unmarshal([]byte(o), &v))
	require.Contains(t, v, "processes")

	pages := filepath.Join(dir, fmt.Sprintf("pages-%d.img", p.Pid))
	b, err := os.ReadFile(pages)
	require.NoError(t, err)
	b[len(b)-1] ^= 1
	require.NoError(t, os.WriteFile(pages, b, 0o600))
	_, e, code = cr(t, "show", "-i", dir)
	require.Equal(t, 1, code)
	oneLine(t, e)
	require.Contains(t, e, "checksum mismatch")
}

// TestCLIRestoreForeground: cr stays the parent, forwards SIGTERM and exits
// with 128+15.
func TestCLIRestoreForeground(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "counter"))
	dir := filepath.Join(t.TempDir(), "img")
	_, e, code := cr(t, "dump", "-t", strconv.Itoa(p.Pid), "-o", dir)
	require.Equal(t, 0, code, e)
	p.Kill()

	pidfile := filepath.Join(t.TempDir(), "pid")
	cmd := exec.Command(crBin, "restore", "-i", dir, "--pidfile", pidfile)
	require.NoError(t, cmd.Start())
	var pid int
	for deadline := time.Now().Add(10 * time.Second); pid == 0 && time.Now().Before(deadline); {
		b, _ := os.ReadFile(pidfile)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		time.Sleep(10 * time.Millisecond)
	}
	require.Equal(t, p.Pid, pid)
	q := testutil.Adopt(t, pid, p.Dir)
	q.Check(t)
	require.NoError(t, cmd.Process.Signal(unix.SIGTERM))
	err := cmd.Wait()
	ee, ok := err.(*exec.ExitError)
	require.True(t, ok, "cr exits with the restored process's status: %v", err)
	require.Equal(t, 128+15, ee.ExitCode())
	require.False(t, q.Alive())
}

func TestCLIRestoreDetach(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "counter"))
	dir := filepath.Join(t.TempDir(), "img")
	_, e, code := cr(t, "dump", "-t", strconv.Itoa(p.Pid), "-o", dir)
	require.Equal(t, 0, code, e)
	p.Kill()
	pidfile := filepath.Join(t.TempDir(), "pid")
	_, e, code = cr(t, "restore", "-i", dir, "-d", "--pidfile", pidfile)
	require.Equal(t, 0, code, e)
	b, err := os.ReadFile(pidfile)
	require.NoError(t, err)
	require.Equal(t, strconv.Itoa(p.Pid)+"\n", string(b))
	q := testutil.Adopt(t, p.Pid, p.Dir)
	q.Check(t)
	// Restoring again while it runs: the pid is taken.
	_, e, code = cr(t, "restore", "-i", dir, "-d")
	require.Equal(t, 1, code)
	oneLine(t, e)
	require.Contains(t, e, "is in use")
	q.Check(t)
}

// TestCLIRestoreNotRoot: a non-root user cannot restore a root process.
func TestCLIRestoreNotRoot(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv (util-linux) is not installed")
	}
	p := testutil.Start(t, testutil.BuildC(t, "counter"))
	dir := filepath.Join(t.TempDir(), "img")
	_, e, code := cr(t, "dump", "-t", strconv.Itoa(p.Pid), "-o", dir, "--leave-running")
	require.Equal(t, 0, code, e)
	require.NoError(t, os.Chmod(filepath.Dir(filepath.Dir(dir)), 0o755))
	require.NoError(t, os.Chmod(filepath.Dir(dir), 0o755))
	require.NoError(t, os.Chmod(dir, 0o755))
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range ents {
		require.NoError(t, os.Chmod(filepath.Join(dir, e.Name()), 0o644))
	}
	p.Kill()
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", crBin, "restore", "-i", dir, "-d")
	out, err := cmd.CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(out), "only root may restore another user's process")
	require.NoDirExists(t, fmt.Sprintf("/proc/%d", p.Pid))
}
