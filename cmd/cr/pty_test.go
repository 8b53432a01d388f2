package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/procfs"
	"github.com/stretchr/testify/require"
)

// needProgram skips a test whose program is missing, or fails it in CI
// (.ci/run installs it).
func needProgram(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed, and CI must run this test (.ci/run installs it)", name)
		}
		t.Skipf("%s is not installed (.ci/run installs it)", name)
	}
}

// endSessions kills every process of the sessions sids and reaps those
// that are the test's children (restored processes are reparented to it,
// the subreaper).
func endSessions(sids ...int) {
	in := map[int]bool{}
	for _, s := range sids {
		in[s] = true
	}
	for round := 0; round < 50; round++ {
		ents, _ := os.ReadDir("/proc")
		left := 0
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			st, err := procfs.ReadStat(pid)
			if err != nil || !in[st.Session] {
				continue
			}
			left++
			syscall.Kill(pid, syscall.SIGKILL)
			if st.Ppid == os.Getpid() {
				testutil.Reap(pid, time.Second)
			}
		}
		if left == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dumpRetrying dumps pid into dir; a dump refused because a terminal still
// held bytes its reader had not read yet is tried again (the reader reads
// them at once once the tree runs again).
func dumpRetrying(t *testing.T, pid int, dir string) {
	t.Helper()
	var e string
	for try := 0; try < 5; try++ {
		var code int
		_, e, code = cr(t, "dump", "-t", strconv.Itoa(pid), "-o", dir)
		if code == 0 {
			return
		}
		if !strings.Contains(e, "not read yet") {
			break
		}
		t.Logf("dump refused for queued terminal bytes, again: %s", e)
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("dump of pid %d: %s", pid, e)
}

// ttyOf returns the controlling terminal number (tty_nr) and session of pid.
func ttyOf(t *testing.T, pid int) (int, int) {
	st, err := procfs.ReadStat(pid)
	require.NoError(t, err, "pid %d", pid)
	return st.TtyNr, st.Session
}

var countRe = regexp.MustCompile(`count (\d+)`)

// counts returns the numbers of the "count N" lines of s, in order.
func counts(s string) []int {
	var out []int
	for _, m := range countRe.FindAllStringSubmatch(s, -1) {
		n, _ := strconv.Atoi(m[1])
		out = append(out, n)
	}
	return out
}

// TestScript: `script -q -c PROG /dev/null` (a pty master in script, the
// slave the controlling terminal of the program's session, a signalfd)
// is dumped and restored: the program goes on counting from where it was,
// with the same pid and its controlling terminal, nothing lost.
func TestScript(t *testing.T) {
	testutil.RequireRoot(t)
	needProgram(t, "script")
	cr(t, "help") // build cr
	wd := t.TempDir()
	logPath := filepath.Join(wd, "log")
	logf, err := os.Create(logPath)
	require.NoError(t, err)
	defer logf.Close()
	cmd := exec.Command("script", "-q", "-c", `i=0; while :; do i=$((i+1)); echo "count $i pid $$"; sleep 0.1; done`, "/dev/null")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	require.NoError(t, cmd.Start())
	pid := cmd.Process.Pid
	var shell int
	t.Cleanup(func() { endSessions(pid, shell) })
	read := func() string { b, _ := os.ReadFile(logPath); return string(b) }
	waitCount := func(min int) []int {
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if c := counts(read()); len(c) > 0 && c[len(c)-1] >= min {
				return c
			}
		}
		t.Fatalf("the count never reached %d:\n%s", min, read())
		return nil
	}
	waitCount(3)
	m := regexp.MustCompile(`pid (\d+)`).FindStringSubmatch(read())
	require.NotNil(t, m)
	shell, _ = strconv.Atoi(m[1])
	ttyBefore, sid := ttyOf(t, shell)
	require.NotZero(t, ttyBefore)
	require.Equal(t, shell, sid)

	dir := filepath.Join(t.TempDir(), "img")
	dumpRetrying(t, pid, dir)
	_, err = testutil.Reap(pid, 5*time.Second)
	require.NoError(t, err)
	endSessions(shell) // killed with script; reaped here
	last := counts(read())
	n := last[len(last)-1]

	_, e, code := cr(t, "restore", "-i", dir, "-d")
	require.Equal(t, 0, code, e)
	c := waitCount(n + 3)
	for i := 1; i < len(c); i++ {
		require.Equal(t, c[i-1]+1, c[i], "the count goes on by one, never restarted nor skipping: %v", c)
	}
	tty, sid := ttyOf(t, shell)
	require.Equal(t, ttyBefore, tty, "the shell keeps its controlling terminal")
	require.Equal(t, shell, sid)
	all := regexp.MustCompile(`pid (\d+)`).FindAllStringSubmatch(read(), -1)
	require.Equal(t, strconv.Itoa(shell), all[len(all)-1][1], "the same shell counts on")
}

// TestTmuxServer: a tmux server started detached with its socket in a
// temporary directory and a pane whose shell counts, reading a line
// between counts, is dumped and restored: the pane shows the count going
// on with no restart, its shell keeps its pid and controlling terminal, and
// a command sent with send-keys runs and its output appears. The server's
// listening socket is a named unix socket (issue 13).
func TestTmuxServer(t *testing.T) {
	testutil.RequireRoot(t)
	needProgram(t, "tmux")
	cr(t, "help") // build cr
	sock := filepath.Join(t.TempDir(), "sock")
	tmux := func(args ...string) string {
		out, err := exec.Command("tmux", append([]string{"-S", sock}, args...)...).CombinedOutput()
		require.NoError(t, err, "tmux %v: %s", args, out)
		return string(out)
	}
	tmux("new-session", "-d", "-x", "80", "-y", "20",
		`i=0; while :; do i=$((i+1)); echo "count $i"; if read -r -t 0.2 line; then eval "$line"; fi; done`)
	server, err := strconv.Atoi(strings.TrimSpace(tmux("display-message", "-p", "#{pid}")))
	require.NoError(t, err)
	pane, err := strconv.Atoi(strings.TrimSpace(tmux("display-message", "-p", "#{pane_pid}")))
	require.NoError(t, err)
	t.Cleanup(func() {
		exec.Command("tmux", "-S", sock, "kill-server").Run()
		endSessions(server, pane)
	})
	screen := func() string { return tmux("capture-pane", "-p", "-t", "0") }
	waitScreen := func(what string, ok func(string) bool) string {
		var s string
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if s = screen(); ok(s) {
				return s
			}
		}
		t.Fatalf("the pane never showed %s:\n%s", what, s)
		return ""
	}
	atLeast := func(n int) func(string) bool {
		return func(s string) bool { c := counts(s); return len(c) > 0 && c[len(c)-1] >= n }
	}
	waitScreen("count 3", atLeast(3))
	ttyBefore, _ := ttyOf(t, pane)
	require.NotZero(t, ttyBefore)

	dir := filepath.Join(t.TempDir(), "img")
	dumpRetrying(t, server, dir)
	endSessions(server, pane)
	_, e, code := cr(t, "restore", "-i", dir, "-d")
	require.Equal(t, 0, code, e)
	before := counts(screen())
	n := before[len(before)-1]
	s := waitScreen(fmt.Sprintf("count %d", n+3), atLeast(n+3))
	c := counts(s)
	for i := 1; i < len(c); i++ {
		require.Equal(t, c[i-1]+1, c[i], "the count goes on by one, never restarted: %v", c)
	}
	tty, sid := ttyOf(t, pane)
	require.Equal(t, ttyBefore, tty, "the pane's shell keeps its pid and controlling terminal")
	require.Equal(t, pane, sid)
	tmux("send-keys", "-t", "0", "echo hello-$((6*7))", "Enter")
	waitScreen("hello-42", func(s string) bool { return strings.Contains(s, "hello-42") })
}
