package main

import (
	"bytes"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/dump"
	"github.com/cr-tools/cr/pkg/restore"
	"github.com/stretchr/testify/require"
)

// TestProgressLine: the meter draws its line (pages done/total, MB/s, ETA)
// from the typed events once the work has lasted 0.5 s, not before, and
// clears it when the next phase comes; --display-stats's phase times come
// from the same events.
func TestProgressLine(t *testing.T) {
	var out bytes.Buffer
	m := &meter{what: "dump", bar: true, out: &out}
	m.dumpEvent(dump.Event{Phase: dump.Frozen, Elapsed: time.Millisecond})
	m.dumpEvent(dump.Event{Phase: dump.Collected, Elapsed: 2 * time.Millisecond})
	m.dumpEvent(dump.Event{Phase: dump.Pages, Done: 10, Total: 1000, Elapsed: 100 * time.Millisecond})
	require.Empty(t, out.String(), "nothing for work under 0.5 s")
	time.Sleep(150 * time.Millisecond) // the line is redrawn at most every 100 ms
	m.dumpEvent(dump.Event{Phase: dump.Pages, Done: 500, Total: 1000, Elapsed: 600 * time.Millisecond})
	require.Contains(t, out.String(), "dump: pages 500/1000")
	require.Contains(t, out.String(), "B/s)")
	m.dumpEvent(dump.Event{Phase: dump.Pages, Done: 1000, Total: 1000, Elapsed: 1100 * time.Millisecond})
	m.dumpEvent(dump.Event{Phase: dump.Written, Done: 1000, Total: 1000, Elapsed: 1200 * time.Millisecond})
	require.Nil(t, m.pb, "the line is gone once the pages are written")

	var st bytes.Buffer
	m.printPhases(&st)
	for _, s := range []string{"frozen               1.000 ms", "collected            2.000 ms", "pages                100.000 ms", "written              1200.000 ms", "pages copied           1000 of 1000, 4.1 MB/s"} {
		require.Contains(t, st.String(), s)
	}

	// Plain lines at -v3 and up (a non-terminal, or a log file).
	var log bytes.Buffer
	m = &meter{what: "restore", log: &log}
	m.restoreEvent(restore.Event{Phase: restore.Validated, Total: 100, Elapsed: time.Millisecond})
	m.restoreEvent(restore.Event{Phase: restore.Created, Total: 100, Elapsed: 2 * time.Millisecond})
	m.restoreEvent(restore.Event{Phase: restore.Memory, Done: 100, Total: 100, Elapsed: 3 * time.Millisecond})
	m.restoreEvent(restore.Event{Phase: restore.Running, Done: 100, Total: 100, Elapsed: 4 * time.Millisecond})
	require.Equal(t, "restore: validated after 1ms\nrestore: created after 2ms\nrestore: pages 100/100 (100%)\nrestore: running after 4ms\n", log.String())
}

// TestCLIProgressNotOnPipe: cr dump and cr restore with stderr on a pipe
// print no progress line; with -v3 they print plain progress lines.
func TestCLIProgressNotOnPipe(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "bigmem"), "16")
	dir := filepath.Join(t.TempDir(), "img")
	_, e, code := cr(t, "dump", "-t", strconv.Itoa(p.Pid), "-o", dir, "--leave-running")
	require.Equal(t, 0, code, e)
	require.Empty(t, e, "nothing on a pipe")
	dir2 := filepath.Join(t.TempDir(), "img")
	_, e, code = cr(t, "dump", "-t", strconv.Itoa(p.Pid), "-o", dir2, "--leave-running", "-v3")
	require.Equal(t, 0, code, e)
	require.Contains(t, e, "dump: frozen after ")
	require.Regexp(t, `dump: pages (\d+)/(\d+) \(100%\)`, e)
	require.Contains(t, e, "dump: resumed after ")
	require.False(t, strings.Contains(e, "\r"), "no progress bar on a pipe")
	p.Check(t)
}
