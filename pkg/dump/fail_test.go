package dump_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/dump"
	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/ptrace"
	"golang.org/x/sys/unix"
)

// runBounded runs dump.Run and fails the test if it does not return in time.
func runBounded(t *testing.T, opt dump.Options) (*dump.Result, error) {
	t.Helper()
	if opt.Timeout == 0 {
		opt.Timeout = 5 * time.Second
	}
	type out struct {
		res *dump.Result
		err error
	}
	ch := make(chan out, 1)
	go func() {
		res, err := dump.Run(context.Background(), opt)
		ch <- out{res, err}
	}()
	select {
	case o := <-ch:
		return o.res, o.err
	case <-time.After(30 * time.Second):
		t.Fatalf("dump of pid %d hangs", opt.Pid)
		return nil, nil
	}
}

// expectNothingLeft checks that parent holds exactly the names in keep:
// no image directory and no .img.tmp-* directory.
func expectNothingLeft(t *testing.T, parent string, keep ...string) {
	t.Helper()
	ents, err := os.ReadDir(parent)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, ",") != strings.Join(keep, ",") {
		t.Errorf("%s holds %v after a failed dump, want %v", parent, names, keep)
	}
}

// failDump dumps pid into a fresh directory, expects an error and checks
// that nothing is left behind.
func failDump(t *testing.T, pid int) error {
	t.Helper()
	parent := t.TempDir()
	res, err := runBounded(t, dump.Options{Pid: pid, Dir: filepath.Join(parent, "img"), LeaveRunning: true})
	if err == nil {
		t.Fatalf("dump of pid %d succeeded (%+v), want an error", pid, res)
	}
	t.Logf("pid %d: %v", pid, err)
	expectNothingLeft(t, parent)
	return err
}

func TestDumpNoProcess(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		t.Fatal(err)
	}
	max, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	for _, pid := range []int{max + 1, 1 << 30, -1, 0} {
		err := failDump(t, pid)
		if pid > 0 && !errors.Is(err, dump.ErrNoProcess) {
			t.Errorf("pid %d: error %v is not ErrNoProcess", pid, err)
		}
	}
	// A pid that existed a moment ago.
	p := testutil.Start(t, testutil.BuildC(t, "counter"))
	p.Kill()
	if err := failDump(t, p.Pid); !errors.Is(err, dump.ErrNoProcess) {
		t.Errorf("dead pid %d: error %v is not ErrNoProcess", p.Pid, err)
	}
	// A zombie.
	z := testutil.Start(t, testutil.BuildC(t, "counter"))
	unix.Kill(z.Pid, unix.SIGKILL)
	for deadline := time.Now().Add(5 * time.Second); z.Alive() && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if err := failDump(t, z.Pid); !errors.Is(err, dump.ErrNoProcess) {
		t.Errorf("zombie pid %d: error %v is not ErrNoProcess", z.Pid, err)
	}
	// cr itself.
	failDump(t, os.Getpid())
}

// A process already traced by someone else (a debugger) cannot be dumped;
// it is not harmed and runs on once the other tracer lets it go.
func TestDumpAlreadyTraced(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "counter"))
	tr := ptrace.NewTracer()
	defer tr.Close()
	task, err := tr.Seize(p.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	released := false
	release := func() {
		if !released {
			released = true
			if err := task.Detach(0); err != nil {
				t.Errorf("detach: %v", err)
			}
		}
	}
	defer release()
	err = failDump(t, p.Pid)
	if !errors.Is(err, dump.ErrPermission) {
		t.Errorf("error %v is not ErrPermission", err)
	}
	if !strings.Contains(err.Error(), "traced") || !strings.Contains(err.Error(), strconv.Itoa(os.Getpid())) {
		t.Errorf("error %q does not say the process is already traced (by %d)", err, os.Getpid())
	}
	release()
	if !p.Alive() {
		t.Fatal("target gone")
	}
	p.Check(t)
	p.Check(t)
}

// A target that exits while it is dumped: success or a clean error, never a
// hang, panic or leftover directory.
func TestDumpExitingTarget(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	bin := testutil.BuildC(t, "exits")
	var ok, failed int
	for i := 0; i < 12; i++ {
		life := []int{0, 1, 2, 3, 5, 8}[i%6]
		p := testutil.Start(t, bin, strconv.Itoa(life))
		parent := t.TempDir()
		dir := filepath.Join(parent, "img")
		res, err := runBounded(t, dump.Options{Pid: p.Pid, Dir: dir, LeaveRunning: true})
		if err != nil {
			failed++
			t.Logf("lifetime %d ms: %v", life, err)
			expectNothingLeft(t, parent)
			var ue *dump.UnsupportedError
			if !errors.Is(err, dump.ErrNoProcess) && !errors.As(err, &ue) {
				t.Logf("lifetime %d ms: error is neither ErrNoProcess nor unsupported: %v", life, err)
			}
		} else {
			ok++
			ck, err := image.Load(res.Dir)
			if err != nil {
				t.Fatalf("lifetime %d ms: dump succeeded but the image does not load: %v", life, err)
			}
			if err := image.VerifyPages(res.Dir, ck.Processes[0]); err != nil {
				t.Fatal(err)
			}
			expectNothingLeft(t, parent, "img")
		}
		// Either way the process finishes by itself.
		for deadline := time.Now().Add(5 * time.Second); p.Alive(); {
			if time.Now().After(deadline) {
				t.Fatalf("lifetime %d ms: pid %d still alive (state after the dump)", life, p.Pid)
			}
			time.Sleep(2 * time.Millisecond)
		}
		p.Kill()
	}
	t.Logf("%d dumps succeeded, %d failed cleanly", ok, failed)
}

// A target killed at some moment of its dump (the 8 MiB anon fixture takes
// 10-20 ms to dump): success or a clean error, nothing left behind.
func TestDumpKilledTarget(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	bin := testutil.BuildC(t, "anon")
	var ok, failed int
	for i := 0; i < 10; i++ {
		p := testutil.Start(t, bin)
		parent := t.TempDir()
		delay := time.Duration(i) * 2 * time.Millisecond
		timer := time.AfterFunc(delay, func() { unix.Kill(p.Pid, unix.SIGKILL) })
		res, err := runBounded(t, dump.Options{Pid: p.Pid, Dir: filepath.Join(parent, "img"), LeaveRunning: true})
		timer.Stop()
		if err != nil {
			failed++
			t.Logf("killed after %v: %v", delay, err)
			if !errors.Is(err, dump.ErrNoProcess) {
				t.Errorf("killed after %v: error %v is not ErrNoProcess", delay, err)
			}
			expectNothingLeft(t, parent)
		} else {
			ok++
			if _, err := image.Load(res.Dir); err != nil {
				t.Fatalf("killed after %v: dump succeeded but the image does not load: %v", delay, err)
			}
			expectNothingLeft(t, parent, "img")
		}
		p.Kill()
	}
	t.Logf("%d dumps succeeded, %d failed cleanly", ok, failed)
}

func TestDumpSocketUnsupported(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "socket"))
	err := failDump(t, p.Pid)
	var ue *dump.UnsupportedError
	if !errors.As(err, &ue) || ue.Pid != p.Pid {
		t.Fatalf("error %T %v is not a *dump.UnsupportedError for pid %d", err, err, p.Pid)
	}
	if !strings.Contains(err.Error(), "fd 3 is a TCP/IP (AF_INET) socket") {
		t.Errorf("error %q does not name fd 3 as a socket", err)
	}
	p.Check(t)
}

// TestDumpGoThreads: every thread of a Go program is saved.
func TestDumpGoThreads(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildGo(t, "testdata/gothreads"))
	dir := filepath.Join(t.TempDir(), "img")
	_, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: dir, LeaveRunning: true})
	if err != nil {
		t.Fatal(err)
	}
	ck, err := image.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	tids, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", p.Pid))
	// The runtime may start another thread after the dump, not lose one.
	if n := len(ck.Processes[0].Threads); n < 2 || n > len(tids) {
		t.Errorf("image has %d threads, the process %d", n, len(tids))
	}
	p.Check(t)
}

func TestDumpOutputDir(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "counter"))

	// An existing non-empty directory is refused and left alone.
	parent := t.TempDir()
	dir := filepath.Join(parent, "img")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "keep"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := runBounded(t, dump.Options{Pid: p.Pid, Dir: dir, LeaveRunning: true})
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("dump into a non-empty dir: %v", err)
	}
	expectNothingLeft(t, parent, "img")
	if ents, _ := os.ReadDir(dir); len(ents) != 1 || ents[0].Name() != "keep" {
		t.Errorf("non-empty dir changed: %v", ents)
	}
	p.Check(t)

	// A missing parent directory.
	_, err = runBounded(t, dump.Options{Pid: p.Pid, Dir: filepath.Join(parent, "no", "img"), LeaveRunning: true})
	if err == nil {
		t.Error("dump into a missing parent succeeded")
	}
	expectNothingLeft(t, parent, "img")
	p.Check(t)

	// An existing empty directory is fine.
	empty := filepath.Join(t.TempDir(), "img")
	if err := os.Mkdir(empty, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := runBounded(t, dump.Options{Pid: p.Pid, Dir: empty, LeaveRunning: true}); err != nil {
		t.Errorf("dump into an empty dir: %v", err)
	} else if _, err := image.Load(empty); err != nil {
		t.Error(err)
	}
	expectNothingLeft(t, filepath.Dir(empty), "img")
	p.Check(t)
}
