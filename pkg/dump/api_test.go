package dump_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/dump"
	"github.com/cr-tools/cr/pkg/notify"
	"github.com/stretchr/testify/require"
)

// TestRunContextCancel cancels the context of dumps (--leave-running) at
// random moments spread over a typical dump of a 64 MiB process: every
// dump either completes or returns an error wrapping context.Canceled and
// dump.ErrInterrupted, and then the target runs on exactly as before (same
// maps, not traced, not stopped, its counter going on) and nothing of the
// image is on disk.
func TestRunContextCancel(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "bigmem"), "64")
	before := readMaps(t, p.Pid)
	tmp := t.TempDir()
	n := 0
	dumpOnce := func(ctx context.Context) (string, error) {
		n++
		dir := filepath.Join(tmp, fmt.Sprintf("img%d", n))
		_, err := dump.Run(ctx, dump.Options{Pid: p.Pid, Dir: dir, LeaveRunning: true})
		return dir, err
	}
	// A typical dump: the fastest of three (the first warms the caches).
	typical := time.Hour
	for i := 0; i < 3; i++ {
		start := time.Now()
		dir, err := dumpOnce(context.Background())
		require.NoError(t, err)
		typical = min(typical, time.Since(start))
		require.NoError(t, os.RemoveAll(dir))
	}

	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	var interrupted, finished int
	for i := 0; i < 20; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		delay := time.Duration(rng.Int63n(int64(typical) * 11 / 10))
		if i == 0 {
			delay = 0 // cancelled before Run starts
		}
		timer := time.AfterFunc(delay, cancel)
		if delay == 0 {
			cancel()
		}
		dir, err := dumpOnce(ctx)
		timer.Stop()
		cancel()
		what := fmt.Sprintf("iteration %d (cancelled after %v)", i, delay)
		if err == nil {
			finished++
			require.DirExists(t, dir, what)
			require.NoError(t, os.RemoveAll(dir))
		} else {
			interrupted++
			require.ErrorIs(t, err, context.Canceled, what)
			require.ErrorIs(t, err, dump.ErrInterrupted, what)
		}
		left, rerr := os.ReadDir(tmp)
		require.NoError(t, rerr)
		require.Empty(t, left, "%s: nothing of the image stays on disk", what)
		status := readStatus(p.Pid)
		require.Contains(t, status, "TracerPid:\t0\n", "%s: untraced", what)
		require.NotRegexp(t, `State:\s+[tT]`, status, "%s: not stopped", what)
		require.Equal(t, before, readMaps(t, p.Pid), "%s: same maps", what)
		p.Check(t) // the counter goes on, the memory verifies
	}
	t.Logf("typical dump %v; %d interrupted, %d finished before the cancel", typical, interrupted, finished)
	require.GreaterOrEqual(t, interrupted, 5, "most cancellations land inside the dump")
}

// TestRunEvents: a dump reports its phases in order, with page counts
// that rise to a fixed total equal to the pages it saved, and the typed
// hooks run around them.
func TestRunEvents(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "bigmem"), "32")
	var evs []dump.Event
	var hooks []string
	h := &recorder{log: &hooks}
	res, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: filepath.Join(t.TempDir(), "img"), LeaveRunning: true,
		Events: func(e dump.Event) { evs = append(evs, e); hooks = append(hooks, e.Phase.String()) }, Notify: notify.Func(h)})
	require.NoError(t, err)
	p.Check(t)

	var phases []dump.Phase
	for i, e := range evs {
		if len(phases) == 0 || phases[len(phases)-1] != e.Phase {
			phases = append(phases, e.Phase)
		}
		if i > 0 {
			require.GreaterOrEqual(t, e.Elapsed, evs[i-1].Elapsed, "event %d: time goes forward", i)
			require.GreaterOrEqual(t, e.Done, evs[i-1].Done, "event %d: Done never goes back", i)
		}
		require.LessOrEqual(t, e.Done, e.Total, "event %d (%v)", i, e.Phase)
		if e.Phase >= dump.Pages {
			require.Equal(t, res.Pages, e.Total, "event %d (%v): the total is the pages saved", i, e.Phase)
			require.Equal(t, 1, e.Processes)
		}
	}
	require.Equal(t, []dump.Phase{dump.Frozen, dump.Collected, dump.Pages, dump.Written, dump.Verified, dump.Resumed}, phases)
	require.GreaterOrEqual(t, res.Pages, uint64(32<<20/4096))
	require.Greater(t, countPhase(evs, dump.Pages), 1, "several page events for 32 MiB")
	require.Equal(t, []string{"pre-dump", "frozen", "collected"}, hooks[:3])
	require.Equal(t, []string{"verified", "post-dump", "resumed"}, hooks[len(hooks)-3:])
}

func countPhase(evs []dump.Event, ph dump.Phase) int {
	n := 0
	for _, e := range evs {
		if e.Phase == ph {
			n++
		}
	}
	return n
}

// recorder is a notify.Notify that logs the hooks called.
type recorder struct {
	notify.NoNotify
	log *[]string
}

func (r *recorder) PreDump() error  { *r.log = append(*r.log, "pre-dump"); return nil }
func (r *recorder) PostDump() error { *r.log = append(*r.log, "post-dump"); return nil }

// TestRunHookAborts: an error from the typed PreDump hook aborts the dump
// before anything is touched.
func TestRunHookAborts(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "counter"))
	dir := filepath.Join(t.TempDir(), "img")
	_, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: dir, Notify: notify.Func(failing{})})
	require.ErrorContains(t, err, "pre-dump: not now")
	require.NoDirExists(t, dir)
	p.Check(t)
}

type failing struct{ notify.NoNotify }

func (failing) PreDump() error { return errors.New("not now") }
