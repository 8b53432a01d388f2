package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

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
		"fd 3 is an inotify instance",
		"fd 4 is a pidfd",
		"fd 5 is a TCP/IP (AF_INET) socket",
		"fd 6 is " + filepath.Join(p.Dir, "locked") + ", holding a flock write lock",
		"fd 7 is the deleted file " + filepath.Join(p.Dir, "gone"),
	}
	out, e, code := cr(t, "check", "-t", pid)
	require.Equal(t, 1, code, "stdout %s\nstderr %s", out, e)
	require.Empty(t, e)
	require.Contains(t, out, "pid "+pid+": a dump would be refused, for 5 reason(s):")
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
