package dump_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/dump"
	"github.com/cr-tools/cr/pkg/image"
	"github.com/stretchr/testify/require"
)

// TestDumpRefusesOutsideSessionMember: a session leader whose orphaned
// grandchild (reparented away, so outside the tree) is still in its session
// is refused at dump, naming the outsider; restore could not give the
// leader its pid back while the outsider keeps the session id in use.
func TestDumpRefusesOutsideSessionMember(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "orphan"))
	g := p.IntInfo(t, "g")
	gp := testutil.Adopt(t, g, p.Dir) // reparented to the test process: reap it at the end
	parent := t.TempDir()
	_, err := runBounded(t, dump.Options{Pid: p.Pid, Dir: filepath.Join(parent, "img")})
	require.Error(t, err)
	require.Contains(t, err.Error(), fmt.Sprintf("process %d (orphan-g) is in session %d of the dumped tree", g, p.Pid))
	expectNothingLeft(t, parent)
	require.True(t, gp.Alive())
	p.Check(t)
}

// waitZombieLeader waits until pid's main thread is a zombie.
func waitZombieLeader(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		require.NoError(t, err)
		s := string(b)
		if s[strings.LastIndexByte(s, ')')+2] == 'Z' {
			return
		}
		require.True(t, time.Now().Before(deadline), "main thread of %d did not exit", pid)
		time.Sleep(2 * time.Millisecond)
	}
}

// threadStatus reads one field of /proc/PID/task/TID/status.
func threadStatus(t *testing.T, pid, tid int, key string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/status", pid, tid))
	require.NoError(t, err)
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && k == key {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s in the status of thread %d", key, tid)
	return ""
}

// threadRuns checks that thread tid of pid runs (it sleeps 5 ms at a time:
// its voluntary context switches go up).
func threadRuns(t *testing.T, pid, tid int) {
	t.Helper()
	before := threadStatus(t, pid, tid, "voluntary_ctxt_switches")
	time.Sleep(50 * time.Millisecond)
	require.NotEqual(t, before, threadStatus(t, pid, tid, "voluntary_ctxt_switches"), "thread %d of pid %d does not run", tid, pid)
	require.NotContains(t, threadStatus(t, pid, tid, "State"), "stopped", "thread %d of pid %d", tid, pid)
}

// TestDumpLeaderlessThreadGroup: a process whose main thread called
// pthread_exit while another thread runs is refused truthfully (not as a
// zombie), as the root and as a child, naming the pid and the live thread;
// the live thread runs on, untraced, after the refusal.
func TestDumpLeaderlessThreadGroup(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.BuildC(t, "leaderless", "-pthread")
	t.Run("root", func(t *testing.T) {
		p := testutil.Start(t, bin, "self")
		tid := p.IntInfo(t, "tid")
		waitZombieLeader(t, p.Pid)
		parent := t.TempDir()
		_, err := runBounded(t, dump.Options{Pid: p.Pid, Dir: filepath.Join(parent, "img")})
		require.Error(t, err)
		require.Contains(t, err.Error(), fmt.Sprintf("pid %d: its main thread has exited (pthread_exit) while thread %d still runs", p.Pid, tid))
		require.NotContains(t, err.Error(), "zombie")
		expectNothingLeft(t, parent)
		require.Equal(t, "0", threadStatus(t, p.Pid, tid, "TracerPid"))
		threadRuns(t, p.Pid, tid)
	})
	t.Run("child", func(t *testing.T) {
		p := testutil.Start(t, bin, "child")
		child, tid := p.IntInfo(t, "child"), p.IntInfo(t, "tid")
		parent := t.TempDir()
		_, err := runBounded(t, dump.Options{Pid: p.Pid, Dir: filepath.Join(parent, "img")})
		require.Error(t, err)
		require.Contains(t, err.Error(), fmt.Sprintf("pid %d: its main thread has exited (pthread_exit) while thread %d still runs", child, tid))
		expectNothingLeft(t, parent)
		require.Equal(t, "0", threadStatus(t, child, tid, "TracerPid"))
		threadRuns(t, child, tid)
		p.Check(t)
	})
}

// TestDumpChecksImageBeforeKill: a dump whose image restore would refuse
// (here the process's working directory recorded as one that does not
// exist) fails before the kill: the process runs on, nothing is left on
// disk, and the error says what restore would refuse.
func TestDumpChecksImageBeforeKill(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "counter"))
	dump.SetTestHookCheckpoint(func(ck *image.Checkpoint) { ck.Processes[0].FS.Cwd.Path = "/nonexistent-cr-test-dir" })
	defer dump.SetTestHookCheckpoint(nil)
	parent := t.TempDir()
	_, err := runBounded(t, dump.Options{Pid: p.Pid, Dir: filepath.Join(parent, "img")})
	require.Error(t, err)
	require.Contains(t, err.Error(), "the image would not restore")
	require.Contains(t, err.Error(), "directory /nonexistent-cr-test-dir")
	expectNothingLeft(t, parent)
	p.Check(t)
}

// TestDumpRefusesThreadID: -t with the id of a thread other than the main
// one names the process to dump instead of recording the thread as one.
func TestDumpRefusesThreadID(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "pthreads", "-pthread"))
	tid := p.IntsInfo(t, "tids")[1]
	require.NotEqual(t, p.Pid, tid)
	_, err := dump.Run(context.Background(), dump.Options{Pid: tid, Dir: filepath.Join(t.TempDir(), "img")})
	require.Error(t, err)
	require.Contains(t, err.Error(), fmt.Sprintf("%d is a thread of process %d, not a process: dump -t %d", tid, p.Pid, p.Pid))
	p.Check(t)
	_, err = dump.Run(context.Background(), dump.Options{Pid: p.Pid})
	require.ErrorContains(t, err, "Options.Dir")
}
