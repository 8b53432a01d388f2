package restore_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/dump"
	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/restore"
	"github.com/stretchr/testify/require"
)

// threadTree starts bash with two pthreads fixtures (5 threads each) as
// children, dumps the tree (killing it) and returns the image directory,
// the fixtures' work directory and the image's pids.
func threadTree(t *testing.T) (img, dir string, pids []int) {
	bin := testutil.BuildC(t, "pthreads", "-pthread")
	dir = t.TempDir()
	for _, sub := range []string{"a", "b"} {
		require.NoError(t, os.MkdirAll(filepath.Join(dir, sub), 0o755))
	}
	p := startShell(t, dir, fmt.Sprintf("%[1]s a >a/log 2>&1 & %[1]s b >b/log 2>&1 & wait", bin))
	// Wait for both fixtures' READY lines.
	deadline := time.Now().Add(10 * time.Second)
	for {
		a, _ := os.ReadFile(filepath.Join(dir, "a", "log"))
		b, _ := os.ReadFile(filepath.Join(dir, "b", "log"))
		if bytes.Contains(a, []byte("READY")) && bytes.Contains(b, []byte("READY")) {
			break
		}
		require.True(t, time.Now().Before(deadline), "fixtures never started")
		time.Sleep(10 * time.Millisecond)
	}
	img = filepath.Join(t.TempDir(), "img")
	_, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: img})
	require.NoError(t, err)
	p.Kill()
	reapTree(t, img)
	ck, err := image.Load(img)
	require.NoError(t, err)
	return img, dir, ck.Inventory.Pids
}

// tasks lists the threads of pid from /proc, sorted.
func tasks(t *testing.T, pid int) []int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	require.NoError(t, err)
	var out []int
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		require.NoError(t, err)
		out = append(out, n)
	}
	sort.Ints(out)
	return out
}

// TestRestoreResultAndEvents: restoring a tree with threads (bash and two
// pthreads programs of 5 threads each) reports its phases in order, with
// memory counts rising to their total, and Result.Processes lists every
// pid and tid, as /proc shows them.
func TestRestoreResultAndEvents(t *testing.T) {
	testutil.RequireRoot(t)
	img, _, pids := threadTree(t)
	var evs []restore.Event
	res, err := restore.Run(context.Background(), restore.Options{Dir: img, Events: func(e restore.Event) { evs = append(evs, e) }})
	require.NoError(t, err)
	q := testutil.Adopt(t, res.Pid, t.TempDir())
	defer killGroup(q)

	var got []int
	threads := 0
	for _, p := range res.Processes {
		got = append(got, p.Pid)
		require.False(t, p.Zombie)
		require.Equal(t, p.Pid, p.Tids[0], "the main thread first")
		tids := append([]int(nil), p.Tids...)
		sort.Ints(tids)
		require.Equal(t, tasks(t, p.Pid), tids, "threads of pid %d", p.Pid)
		threads += len(p.Tids)
	}
	require.Equal(t, pids, got, "every pid, in image order")
	require.Equal(t, res.Pid, got[0])
	require.Equal(t, 1+5+5, threads, "bash, and two fixtures of 5 threads each")

	var phases []restore.Phase
	for i, e := range evs {
		if len(phases) == 0 || phases[len(phases)-1] != e.Phase {
			phases = append(phases, e.Phase)
		}
		require.Equal(t, len(pids), e.Processes)
		require.LessOrEqual(t, e.Done, e.Total, "event %d", i)
		require.Equal(t, evs[0].Total, e.Total, "event %d: the total is fixed", i)
		if i > 0 {
			require.GreaterOrEqual(t, e.Done, evs[i-1].Done, "event %d: Done never goes back", i)
			require.GreaterOrEqual(t, e.Elapsed, evs[i-1].Elapsed)
		}
	}
	require.Equal(t, []restore.Phase{restore.Validated, restore.Created, restore.Memory, restore.Running}, phases)
	last := evs[len(evs)-1]
	require.Equal(t, last.Total, last.Done, "every page in place when the processes run")
	require.Greater(t, last.Total, uint64(0))
}

// TestRestoreContextCancel cancels restores of a tree with threads at
// random moments spread over a typical restore: a cancelled restore
// returns an error wrapping context.Canceled and leaves nothing of the
// tree (every pid free again); the image then restores as ever.
func TestRestoreContextCancel(t *testing.T) {
	testutil.RequireRoot(t)
	img, _, pids := threadTree(t)
	gone := func(what string) {
		for _, pid := range pids {
			testutil.Reap(pid, 0) // a restored zombie child reparented to us
			_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
			require.True(t, os.IsNotExist(err), "%s: pid %d is free", what, pid)
		}
	}
	once := func(ctx context.Context) error {
		res, err := restore.Run(ctx, restore.Options{Dir: img})
		if err != nil {
			return err
		}
		killGroup(&testutil.Proc{Pid: res.Pid})
		for _, pid := range pids {
			testutil.Reap(pid, time.Second)
		}
		return nil
	}
	typical := time.Hour
	for i := 0; i < 3; i++ {
		start := time.Now()
		require.NoError(t, once(context.Background()))
		typical = min(typical, time.Since(start))
		gone("uncancelled restore, killed")
	}
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	var cancelled, finished int
	for i := 0; i < 20; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		delay := time.Duration(rng.Int63n(int64(typical) * 11 / 10))
		if i == 0 {
			delay = 0
			cancel()
		}
		timer := time.AfterFunc(delay, cancel)
		err := once(ctx)
		timer.Stop()
		cancel()
		what := fmt.Sprintf("iteration %d (cancelled after %v)", i, delay)
		if err == nil {
			finished++
		} else {
			cancelled++
			require.ErrorIs(t, err, context.Canceled, what)
		}
		gone(what)
	}
	t.Logf("typical restore %v; %d cancelled, %d finished before the cancel", typical, cancelled, finished)
	require.GreaterOrEqual(t, cancelled, 5, "most cancellations land inside the restore")

	// The image is intact.
	res, err := restore.Run(context.Background(), restore.Options{Dir: img})
	require.NoError(t, err)
	q := testutil.Adopt(t, res.Pid, t.TempDir())
	require.Len(t, res.Processes, len(pids))
	require.NoError(t, syscall.Kill(res.Processes[1].Pid, 0), "a fixture runs")
	killGroup(q)
}
