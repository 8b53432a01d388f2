package restore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/dump"
	"github.com/cr-tools/cr/pkg/restore"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func monoNow(t *testing.T) time.Duration {
	var ts unix.Timespec
	require.NoError(t, unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts))
	return time.Duration(ts.Nano())
}

// TestRestoreSleeps: threads dumped inside timed waits (testdata/sleepers.c)
// go on waiting after the restore instead of returning EINTR at once, and
// end no later than they may: a call that knows its time left (rem, or the
// remaining time the kernel writes back, as for select) by its deadline plus
// the time spent checkpointed, one that does not (poll, a NULL rem, a
// relative futex wait) at most its whole timeout after the restore, an
// absolute one at its deadline.
func TestRestoreSleeps(t *testing.T) {
	testutil.RequireRoot(t)
	const span = 2 * time.Second
	const tol = 400 * time.Millisecond
	p := testutil.Start(t, testutil.BuildC(t, "sleepers", "-pthread"), fmt.Sprint(span.Milliseconds()))
	// Every thread is in its call, and far enough in that restarting a call
	// that knows its time left with its whole timeout would end too late.
	time.Sleep(800 * time.Millisecond)
	dir := filepath.Join(t.TempDir(), "img")
	dumpAt := monoNow(t)
	_, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: dir})
	require.NoError(t, err)
	p.Kill()
	reapTree(t, dir)
	res, err := restore.Run(context.Background(), restore.Options{Dir: dir})
	require.NoError(t, err)
	restoredAt := monoNow(t)
	q := testutil.Adopt(t, res.Pid, p.Dir)
	ws := q.Wait(t, 10*time.Second)
	require.True(t, ws.Exited(), "exit status %v; log:\n%s", ws, q.LogText())
	require.Equal(t, 0, ws.ExitStatus(), "log:\n%s", q.LogText())
	gap := restoredAt - dumpAt

	type result struct {
		r, errno   int64
		start, end time.Duration
	}
	done := map[string]result{}
	for _, l := range strings.Split(q.LogText(), "\n") {
		var name string
		var x result
		if _, err := fmt.Sscanf(l, "DONE %s r=%d errno=%d start=%d end=%d", &name, &x.r, &x.errno, &x.start, &x.end); err == nil {
			done[name] = x
		}
	}
	for _, c := range []struct {
		name     string
		r, errno int64
		kind     string // exact: knows its time left; full: restarts its whole timeout; abs: a deadline
	}{
		{"nanosleep", 0, 0, "exact"},
		{"nanosleep_null", 0, 0, "full"},
		{"clock_nanosleep", 0, 0, "exact"},
		{"clock_nanosleep_null", 0, 0, "full"},
		{"sleep", 0, 0, "exact"}, // glibc: clock_nanosleep(CLOCK_REALTIME, 0, &ts, &ts); returns the seconds left
		{"poll", 0, 0, "full"},
		{"futex", -1, int64(unix.ETIMEDOUT), "full"},
		{"futex_abs", -1, int64(unix.ETIMEDOUT), "abs"},
		{"clock_nanosleep_abs", 0, 0, "abs"},
		{"select", 0, 0, "exact"},
		{"ppoll", 0, 0, "exact"},
	} {
		t.Run(c.name, func(t *testing.T) {
			x, ok := done[c.name]
			require.True(t, ok, "no DONE line; log:\n%s", q.LogText())
			require.Equal(t, c.r, x.r, "result (errno %d)", x.errno)
			require.Equal(t, c.errno, x.errno, "errno")
			took := x.end - x.start
			require.GreaterOrEqual(t, took, span-time.Millisecond, "returned early")
			var latest time.Duration
			switch c.kind {
			case "exact":
				latest = x.start + span + gap
			case "full":
				latest = restoredAt + span
			case "abs":
				latest = max(x.start+span, restoredAt)
			}
			t.Logf("took %v, ended %v before the latest allowed end (checkpointed %v)", took, latest-x.end, gap)
			require.LessOrEqual(t, x.end, latest+tol, "ended %v after the latest allowed end (took %v, checkpointed %v)", x.end-latest, took, gap)
		})
	}
}
