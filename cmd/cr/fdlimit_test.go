package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/stretchr/testify/require"
)

// TestCLIRestoreFdLimitAtCrsLimit: when cr's own hard fd limit equals the
// image's (64), a table with an fd at 63 restores; a full table of distinct open files, which needs
// one slot more, is refused before anything is created, naming the fds,
// the limit and the fix.
func TestCLIRestoreFdLimitAtCrsLimit(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.BuildC(t, "manyfds")
	cr(t, "help") // build cr
	restore := func(dir string) (string, error) {
		out, err := exec.Command("sh", "-c", `ulimit -n 64 && exec "$0" "$@"`, crBin, "restore", "-i", dir, "-d").CombinedOutput()
		return string(out), err
	}
	dumpIt := func(args ...string) (*testutil.Proc, string) {
		p := testutil.Start(t, bin, args...)
		dir := filepath.Join(t.TempDir(), "img")
		_, e, code := cr(t, "dump", "-t", strconv.Itoa(p.Pid), "-o", dir)
		require.Equal(t, 0, code, e)
		p.Kill()
		return p, dir
	}
	// (cr holds its own copy of every open file it passes on, so a table
	// near cr's own limit fails in cr: keep the table small.)
	for _, args := range [][]string{{"64", "10", "63"}, {"64", "10", "63", "62", "61=5"}} {
		p, dir := dumpIt(args...)
		out, err := restore(dir)
		require.NoError(t, err, out)
		q := testutil.Adopt(t, p.Pid, p.Dir)
		q.Check(t)
		q.Kill()
	}
	p, dir := dumpIt("64", "63", "2", "63") // fd 2 its own open file, not the log of fd 1
	out, err := restore(dir)
	require.Error(t, err)
	oneLine(t, out)
	require.Contains(t, out, fmt.Sprintf("pid %d: fds 0 to 63 are all open and no two share an open file: restoring them needs one fd slot more (65) than the hard fd limit 64", p.Pid))
	require.Contains(t, out, "ulimit -Hn")
	require.NoDirExists(t, fmt.Sprintf("/proc/%d", p.Pid))
}
