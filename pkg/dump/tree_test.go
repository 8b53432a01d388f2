package dump_test

import (
	"context"
	"fmt"
	"github.com/cr-tools/cr/pkg/ptrace"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/dump"
	"github.com/cr-tools/cr/pkg/image"
	"github.com/stretchr/testify/require"
)

// TestDumpTreeKeepsCopyOnWrite: dumping a parent and child that share 16 MiB
// copy-on-write stores those pages once, and does not unshare them in the
// live processes (reading them must not pin them).
func TestDumpTreeKeepsCopyOnWrite(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "shm"))
	child := p.IntInfo(t, "c")
	priv := p.HexInfo(t, "priv")
	const pages = 4096
	before := testutil.PFNs(t, p.Pid, priv, pages)
	require.Equal(t, before, testutil.PFNs(t, child, priv, pages), "shared before the dump")

	dir := filepath.Join(t.TempDir(), "img")
	_, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: dir, LeaveRunning: true})
	require.NoError(t, err)
	require.Equal(t, before, testutil.PFNs(t, p.Pid, priv, pages), "the parent's pages were unshared by the dump")
	require.Equal(t, before, testutil.PFNs(t, child, priv, pages), "the child's pages were unshared by the dump")

	ck, err := image.Load(dir)
	require.NoError(t, err)
	require.Len(t, ck.Processes, 2)
	var inParent uint64
	for _, r := range ck.Processes[1].PageMap {
		if r.InParent {
			inParent += r.Pages
		}
	}
	require.GreaterOrEqual(t, inParent, uint64(pages), "the child's inherited pages point to the parent's image")
	st, err := os.Stat(filepath.Join(dir, image.PagesFile(child)))
	require.NoError(t, err)
	require.Less(t, st.Size(), int64(1<<20))
	p.Check(t)
}

// TestDumpStoppedChildStaysStopped: a stopped child of a dumped tree is
// stopped again after a dump with LeaveRunning.
func TestDumpStoppedChildStaysStopped(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "family"))
	s := p.IntInfo(t, "stopped")
	state := func() string {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s))
		require.NoError(t, err)
		st := string(b)
		return strings.Fields(st[strings.LastIndexByte(st, ')')+2:])[0]
	}
	require.Equal(t, "T", state())
	dir := filepath.Join(t.TempDir(), "img")
	_, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: dir, LeaveRunning: true})
	require.NoError(t, err)
	ck, err := image.Load(dir)
	require.NoError(t, err)
	for _, pr := range ck.Processes {
		if pr.Task.Pid == s {
			require.True(t, pr.Task.Stopped, "recorded as stopped")
		}
	}
	time.Sleep(20 * time.Millisecond)
	require.Equal(t, "T", state(), "still stopped after the dump")
	p.Check(t)
}

// TestDumpTreeChildTraced: a child traced by someone else (a debugger) is
// refused with a message that names it; the whole tree goes on as before.
func TestDumpTreeChildTraced(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "family"))
	child := p.IntInfo(t, "b")
	tr := ptrace.NewTracer()
	defer tr.Close()
	task, err := tr.Seize(child, 0)
	require.NoError(t, err)
	require.NoError(t, task.Cont(0))
	dir := filepath.Join(t.TempDir(), "img")
	_, err = dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: dir, LeaveRunning: true})
	require.Error(t, err)
	require.Contains(t, err.Error(), fmt.Sprintf("child process %d", child))
	require.Contains(t, err.Error(), "already traced")
	require.NoDirExists(t, dir)
	require.NoError(t, task.Interrupt())
	_, err = task.Wait()
	require.NoError(t, err)
	require.NoError(t, task.Detach(0))
	p.Check(t)
}

// TestDumpTreeOtherPidNamespace: a process in another pid namespace is
// refused clearly.
func TestDumpTreeOtherPidNamespace(t *testing.T) {
	testutil.RequireRoot(t)
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("unshare (util-linux) is not installed")
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	require.NoError(t, err)
	defer null.Close()
	pid, err := syscall.ForkExec(unshare, []string{"unshare", "--pid", "--fork", "sleep", "1000"}, &syscall.ProcAttr{
		Files: []uintptr{null.Fd(), null.Fd(), null.Fd()}, Sys: &syscall.SysProcAttr{Setsid: true},
	})
	require.NoError(t, err)
	p := testutil.Adopt(t, pid, t.TempDir())
	defer func() { syscall.Kill(-pid, syscall.SIGKILL); p.Kill() }()
	// Wait for the child in the new namespace.
	for i := 0; i < 200; i++ {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid)); len(strings.TrimSpace(string(b))) > 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	_, err = dump.Run(context.Background(), dump.Options{Pid: pid, Dir: filepath.Join(t.TempDir(), "img"), LeaveRunning: true})
	require.Error(t, err)
	require.Contains(t, err.Error(), "another pid namespace")
	require.True(t, p.Alive())
}
