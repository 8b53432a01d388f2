package main

import (
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

func statusField(t *testing.T, pid int, key string) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && k == key {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s in /proc/%d/status", key, pid)
	return ""
}

// TestCLIRestoreFromIgnoringParent: cr started with SIGINT, SIGQUIT and
// SIGHUP ignored (a shell's background job, nohup) restores a process
// whose signals were at their default with them at their default: SigIgn
// is the dumped one, and SIGINT kills it. A cr running with
// no_new_privs, which the process would inherit, is refused.
func TestCLIRestoreFromIgnoringParent(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "counter"))
	ign := statusField(t, p.Pid, "SigIgn")
	dir := filepath.Join(t.TempDir(), "img")
	_, e, code := cr(t, "dump", "-t", strconv.Itoa(p.Pid), "-o", dir)
	require.Equal(t, 0, code, e)
	p.Kill()

	if _, err := exec.LookPath("setpriv"); err == nil {
		out, err := exec.Command("setpriv", "--no-new-privs", crBin, "restore", "-i", dir, "-d").CombinedOutput()
		require.Error(t, err)
		oneLine(t, string(out))
		require.Contains(t, string(out), "no_new_privs")
		require.NoDirExists(t, fmt.Sprintf("/proc/%d", p.Pid))
	}

	out, err := exec.Command("sh", "-c", `trap "" INT QUIT HUP && exec "$0" "$@"`, crBin, "restore", "-i", dir, "-d").CombinedOutput()
	require.NoError(t, err, string(out))
	q := testutil.Adopt(t, p.Pid, p.Dir)
	q.Check(t)
	require.Equal(t, ign, statusField(t, q.Pid, "SigIgn"), "ignored signals")
	require.NoError(t, unix.Kill(q.Pid, unix.SIGINT))
	ws, err := testutil.Reap(q.Pid, 5*time.Second)
	require.NoError(t, err, "SIGINT kills it")
	require.True(t, ws.Signaled() && ws.Signal() == unix.SIGINT, "status %v", ws)
}
