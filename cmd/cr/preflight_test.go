package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/stretchr/testify/require"
)

// TestCLIPreflight: cr check -t PID lists every reason a dump would be
// refused, at once, and cr dump refuses with the same list; the target runs
// on untouched, untraced, and nothing is written. A process cr can dump
// passes the pre-flight with exit status 0.
func TestCLIPreflight(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "refusals"))
	maps, err := os.ReadFile("/proc/" + strconv.Itoa(p.Pid) + "/maps")
	require.NoError(t, err)
	pid := strconv.Itoa(p.Pid)
	want := []string{
		"fd 3 is a userfaultfd",
		"fd 4 is a pidfd of pid 1, a process outside the dumped tree",
		"fd 5 is a TCP/IP (AF_INET) socket",
		"fd 6 is " + filepath.Join(p.Dir, "locked") + ", holding an exclusive flock lock on the whole file: dump with --file-locks to save it\n",
		"fd 7 is the deleted file " + filepath.Join(p.Dir, "gone") + " of 2097152 bytes, larger than the ghost file limit of 1048576 bytes: dump with --ghost-limit 2M to save it\n",
	}
	out, e, code := cr(t, "check", "-t", pid)
	require.Equal(t, 1, code, "stdout %s\nstderr %s", out, e)
	require.Empty(t, e)
	require.Contains(t, out, "pid "+pid+": a dump would be refused, for 5 reasons:")
	for _, w := range want {
		require.Contains(t, out, w)
	}
	require.Equal(t, 6, strings.Count(out, "\n"), out)

	dir := filepath.Join(t.TempDir(), "img")
	_, e, code = cr(t, "dump", "-t", pid, "-o", dir)
	require.Equal(t, 1, code)
	require.Contains(t, e, "cr: cannot dump process "+pid+", for 5 reasons:")
	for _, w := range want {
		require.Contains(t, e, w)
	}
	require.NoDirExists(t, dir)

	after, err := os.ReadFile("/proc/" + pid + "/maps")
	require.NoError(t, err)
	require.Equal(t, string(maps), string(after), "no mapping left behind")
	status, err := os.ReadFile("/proc/" + pid + "/status")
	require.NoError(t, err)
	require.Contains(t, string(status), "TracerPid:\t0\n")
	p.Check(t)

	q := testutil.Start(t, testutil.BuildC(t, "counter"))
	out, e, code = cr(t, "check", "-t", strconv.Itoa(q.Pid))
	require.Equal(t, 0, code, "stdout %s\nstderr %s", out, e)
	require.Contains(t, out, "a dump would go through")
	q.Check(t)
}

// TestCLIDumpOwnAncestor: cr run by the process it is asked to dump says
// so, and leaves it running.
func TestCLIDumpOwnAncestor(t *testing.T) {
	testutil.RequireRoot(t)
	cr(t, "check") // builds crBin
	dir := filepath.Join(t.TempDir(), "img")
	out, err := exec.Command("bash", "-c", `"$0" dump -t $$ -o "$1"; echo "rc=$?"`, crBin, dir).CombinedOutput()
	require.NoError(t, err, string(out))
	require.Contains(t, string(out), "is a descendant of process")
	require.Contains(t, string(out), "cr cannot dump a tree it runs in")
	require.Contains(t, string(out), "rc=1")
	require.NoDirExists(t, dir)
}

// TestCLIPreflightOptions: cr check -t takes the dump options that lift a
// refusal, and judges as the dump with them would (--ghost-limit here).
func TestCLIPreflightOptions(t *testing.T) {
	testutil.RequireRoot(t)
	py, err := exec.LookPath("python3")
	require.NoError(t, err)
	dir := t.TempDir()
	script := `
import os, sys, time
f = open(sys.argv[1] + "/big", "wb"); f.write(b"x" * (2 << 20)); f.flush()
os.unlink(sys.argv[1] + "/big")
open(sys.argv[1] + "/ready", "w").close()
time.sleep(60)
`
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	require.NoError(t, err)
	defer null.Close()
	pid, err := syscall.ForkExec(py, []string{"python3", "-c", script, dir}, &syscall.ProcAttr{
		Files: []uintptr{null.Fd(), null.Fd(), null.Fd()}, Sys: &syscall.SysProcAttr{Setsid: true},
	})
	require.NoError(t, err)
	p := testutil.Adopt(t, pid, dir)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(dir, "ready")); err == nil {
			break
		}
		require.True(t, time.Now().Before(deadline), "python never got ready")
	}
	out, _, code := cr(t, "check", "-t", strconv.Itoa(pid))
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "--ghost-limit")
	out, e, code := cr(t, "check", "-t", strconv.Itoa(pid), "--ghost-limit", "4M")
	require.Equal(t, 0, code, "stdout %s\nstderr %s", out, e)
	require.Contains(t, out, "a dump would go through")
	require.True(t, p.Alive())
}
