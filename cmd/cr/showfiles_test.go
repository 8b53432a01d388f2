package main

import (
	"encoding/json"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/stretchr/testify/require"
)

// TestShowLocks: cr show files and fds list the file locks saved in the
// image (testdata/locks.c, dumped with --file-locks), flock ones as
// exclusive or shared; --json has them per row.
func TestShowLocks(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "locks"))
	dir := filepath.Join(t.TempDir(), "img")
	_, e, code := cr(t, "dump", "-t", strconv.Itoa(p.Pid), "-D", dir, "--leave-running", "--file-locks")
	require.Equal(t, 0, code, e)
	p.Check(t)
	pid := strconv.Itoa(p.Pid)
	o, e, code := cr(t, "show", "-i", dir, "files")
	require.Equal(t, 0, code, e)
	require.Regexp(t, `(?m)/flock\.dat \[locks: flock exclusive\]$`, o)
	require.Regexp(t, `(?m)/flocksh\.dat \[locks: flock shared\]$`, o)
	require.Regexp(t, `(?m)/ofd\.dat \[locks: OFD write bytes 0-99, OFD read bytes 200-EOF\]$`, o)
	require.Regexp(t, `(?m)/posix\.dat \[locks: .*POSIX write bytes 10-29 \(pid `+pid+`\)`, o)
	o, e, code = cr(t, "show", "-i", dir, "fds")
	require.Equal(t, 0, code, e)
	require.Regexp(t, `(?m)^`+pid+`\s+\d+\s+reg\s+\S+\s+\d+\s+\S+/flock\.dat \[locks: flock exclusive\]$`, o)
	o, e, code = cr(t, "show", "-i", dir, "files", "--json")
	require.Equal(t, 0, code, e)
	var rows []map[string]any
	require.NoError(t, json.Unmarshal([]byte(o), &rows))
	found := false
	for _, r := range rows {
		if target, _ := r["target"].(string); filepath.Base(target) == "flocksh.dat" {
			require.Equal(t, []any{"flock shared"}, r["locks"])
			found = true
		}
	}
	require.True(t, found, o)
}

// TestShowTmpfileFlags: an O_TMPFILE descriptor's flags are named
// O_TMPFILE, not O_DIRECTORY and a number.
func TestShowTmpfileFlags(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "oddfiles"), "tmpfile")
	dir := filepath.Join(t.TempDir(), "img")
	_, e, code := cr(t, "dump", "-t", strconv.Itoa(p.Pid), "-D", dir, "--leave-running")
	require.Equal(t, 0, code, e)
	p.Check(t)
	o, e, code := cr(t, "show", "-i", dir, "fds")
	require.Equal(t, 0, code, e)
	require.Regexp(t, `(?m)^`+strconv.Itoa(p.Pid)+`\s+\d+\s+\S+\s+O_RDWR\|O_LARGEFILE\|O_TMPFILE\S*\s+5\s`, o)
	require.NotContains(t, o, "020000000")
	require.Equal(t, "O_RDWR|O_TMPFILE", openFlags(0o20200002))
	require.Equal(t, "O_RDONLY|O_DIRECTORY", openFlags(0o200000))
}
