package main

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/stretchr/testify/require"
)

// startCR starts the cr binary (built by cr) with args, without waiting.
func startCR(t *testing.T, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	if crBin == "" {
		cr(t, "help")
	}
	cmd := exec.Command(crBin, args...)
	var e bytes.Buffer
	cmd.Stderr = &e
	require.NoError(t, cmd.Start())
	return cmd, &e
}

func readFileString(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}

// untraced checks that pid is not traced and not stopped.
func untraced(t *testing.T, pid int) {
	t.Helper()
	st := readFileString(t, fmt.Sprintf("/proc/%d/status", pid))
	require.Contains(t, st, "\nTracerPid:\t0\n", "pid %d is still traced", pid)
	require.NotContains(t, st, "(stopped)", "pid %d is stopped", pid)
	require.NotContains(t, st, "(tracing stop)", "pid %d is in a tracing stop", pid)
}

// TestCLIDumpInterrupted: SIGINT or SIGTERM sent to `cr dump` at a random
// moment of a dump of a 256 MiB process either comes too late (the dump
// completed) or undoes the dump: the process runs on with exactly the same
// mappings (no scratch area left), and nothing is left on disk.
func TestCLIDumpInterrupted(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "bigmem"), "256")
	maps := readFileString(t, fmt.Sprintf("/proc/%d/maps", p.Pid))
	parent := t.TempDir()
	dir := filepath.Join(parent, "img")
	pid := strconv.Itoa(p.Pid)

	// How long a whole dump takes here (the binary built): signals land
	// within that.
	// within that (the faster of two: the first may be slowed by the page
	// cache).
	cr(t, "help")
	var full time.Duration
	for i := 0; i < 2; i++ {
		start := time.Now()
		_, e, code := cr(t, "dump", "-t", pid, "-o", dir, "--leave-running")
		require.Equal(t, 0, code, e)
		if d := time.Since(start); i == 0 || d < full {
			full = d
		}
		require.NoError(t, os.RemoveAll(dir))
	}

	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	interrupted := 0
	for i := 0; i < 6; i++ {
		sig := syscall.SIGINT
		if i%2 == 1 {
			sig = syscall.SIGTERM
		}
		delay := time.Duration(rng.Int63n(int64(full) * 8 / 10))
		cmd, stderr := startCR(t, "dump", "-t", pid, "-o", dir, "--leave-running")
		time.Sleep(delay)
		require.NoError(t, cmd.Process.Signal(sig))
		err := cmd.Wait()
		if err == nil {
			// Too late: the dump was complete. The image is whole.
			_, e, code := cr(t, "show", "-i", dir)
			require.Equal(t, 0, code, e)
			require.NoError(t, os.RemoveAll(dir))
		} else {
			interrupted++
			ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
			if !ws.Signaled() { // (killed before the handler was installed: nothing done yet)
				require.Equal(t, 1, ws.ExitStatus(), stderr.String())
				require.Contains(t, stderr.String(), "dump interrupted", "%v after %v", sig, delay)
				oneLine(t, stderr.String())
			}
		}
		ents, err := os.ReadDir(parent)
		require.NoError(t, err)
		require.Empty(t, ents, "%v after %v left files behind", sig, delay)
		require.True(t, p.Alive())
		untraced(t, p.Pid)
		require.Equal(t, maps, readFileString(t, fmt.Sprintf("/proc/%d/maps", p.Pid)), "%v after %v changed the mappings", sig, delay)
	}
	t.Logf("%d of 6 dumps (%v each) interrupted", interrupted, full)
	require.NotZero(t, interrupted)
	p.Check(t)
}

// TestCLIDumpKilledLeavesTempForNextRun: a `cr dump` killed with SIGKILL in
// the middle of writing pages leaves its temporary directory; the next cr
// run removes it, says so with -v, and the process runs on.
func TestCLIDumpKilledLeavesTempForNextRun(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "bigmem"), "256")
	parent := t.TempDir()
	pid := strconv.Itoa(p.Pid)
	cmd, _ := startCR(t, "dump", "-t", pid, "-o", filepath.Join(parent, "img"), "--leave-running")
	tmp := ""
	for deadline := time.Now().Add(10 * time.Second); tmp == "" && time.Now().Before(deadline); {
		m, _ := filepath.Glob(filepath.Join(parent, ".img.tmp-*", "pages-"+pid+".img"))
		if len(m) > 0 {
			if st, err := os.Stat(m[0]); err == nil && st.Size() > 1<<20 {
				tmp = filepath.Dir(m[0])
			}
		}
		time.Sleep(time.Millisecond)
	}
	if tmp == "" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("the dump wrote no pages")
	}
	require.NoError(t, cmd.Process.Kill())
	cmd.Wait()
	require.DirExists(t, tmp, "SIGKILL leaves the temporary directory")
	require.True(t, p.Alive())
	untraced(t, p.Pid)

	_, e, code := cr(t, "dump", "-v", "-t", pid, "-o", filepath.Join(parent, "img2"), "--leave-running")
	require.Equal(t, 0, code, e)
	require.Contains(t, e, "removed "+tmp+", left by a cr that was killed")
	require.NoDirExists(t, tmp)
	ents, err := os.ReadDir(parent)
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	require.Equal(t, "img2", strings.Join(names, ","))
	p.Check(t)
}
