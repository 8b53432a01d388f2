package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/stretchr/testify/require"
)

// tmuxPane drives one tmux pane running an interactive bash.
type tmuxPane struct {
	t    *testing.T
	sock string
}

func newTmux(t *testing.T) *tmuxPane {
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("tmux is not installed (.ci/run installs it)")
	}
	p := &tmuxPane{t: t, sock: filepath.Join(t.TempDir(), "tmux.sock")}
	p.run("new-session", "-d", "-x", "200", "-y", "50", "env PS1='$ ' bash --norc --noprofile")
	t.Cleanup(func() { exec.Command("tmux", "-S", p.sock, "kill-server").Run() })
	return p
}

func (p *tmuxPane) run(args ...string) string {
	out, err := exec.Command("tmux", append([]string{"-S", p.sock}, args...)...).CombinedOutput()
	require.NoError(p.t, err, string(out))
	return string(out)
}

func (p *tmuxPane) send(line string) { p.run("send-keys", "-t", "0", line, "Enter") }

// waitFor waits until the screen matches re and returns the first match.
func (p *tmuxPane) waitFor(re string) []string {
	p.t.Helper()
	rx := regexp.MustCompile(re)
	var screen string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		screen = p.run("capture-pane", "-p", "-t", "0")
		if m := rx.FindStringSubmatch(screen); m != nil {
			return m
		}
	}
	p.t.Fatalf("screen never showed %q:\n%s", re, screen)
	return nil
}

// TestShellJob checkpoints an interactive program started from a shell in a
// terminal, and restores it into the same terminal with --shell-job.
func TestShellJob(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.BuildC(t, "interactive")
	cr(t, "help") // build cr
	pane := newTmux(t)
	pane.send(bin)
	pid, _ := strconv.Atoi(pane.waitFor(`interactive ready pid=(\d+)`)[1])
	pane.send("one")
	pane.waitFor(`got one n=1`)

	dir := filepath.Join(t.TempDir(), "img")
	_, e, code := cr(t, "dump", "-t", strconv.Itoa(pid), "-o", dir)
	require.Equal(t, 1, code)
	require.Contains(t, e, "--shell-job")
	require.NoDirExists(t, dir)

	_, e, code = cr(t, "dump", "-t", strconv.Itoa(pid), "-o", dir, "--shell-job")
	require.Equal(t, 0, code, e)
	pane.waitFor(`Killed`)

	// Restoring it without --shell-job is refused with a message naming it.
	_, e, code = cr(t, "restore", "-i", dir, "-d")
	require.Equal(t, 1, code)
	require.Contains(t, e, "--shell-job")

	pane.send(crBin + " restore --shell-job -i " + dir + "; echo rc=$?")
	time.Sleep(200 * time.Millisecond)
	pane.send("two")
	pane.waitFor(`got two n=2`) // the same program, its line count kept
	out, err := exec.Command("ps", "-o", "pid=,tty=", "-p", strconv.Itoa(pid)).CombinedOutput()
	require.NoError(t, err, "the restored process runs with its pid")
	require.True(t, strings.Contains(string(out), "pts/"), "it has the terminal: %s", out)
	pane.send("quit")
	pane.waitFor(`rc=0`)
}

// TestShellJobInteractiveBash: an interactive bash started from another
// shell's prompt (its own process group, its own job control), running a
// loop, is dumped with --shell-job and restored by `cr restore --shell-job`
// typed at a prompt of the same terminal. The restored bash leads its group
// again and has the terminal: ^C stops its loop and gives its own prompt
// back (not the outer shell's), where it runs a command with its own pid;
// when it exits, cr restore returns its status to the outer shell.
func TestShellJobInteractiveBash(t *testing.T) {
	testutil.RequireRoot(t)
	cr(t, "help") // build cr
	pane := newTmux(t)
	pane.send("env PS1='inner$ ' bash --norc --noprofile")
	pane.send("echo inner=$$")
	pid, _ := strconv.Atoi(pane.waitFor(`inner=(\d+)`)[1])
	pane.send(`i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.2; done`)
	pane.waitFor(`tick 2\b`)

	dir := filepath.Join(t.TempDir(), "img")
	_, e, code := cr(t, "dump", "-t", strconv.Itoa(pid), "-o", dir, "--shell-job")
	require.Equal(t, 0, code, e)
	pane.run("send-keys", "-t", "0", "clear", "Enter")
	// The killed loop's sleep was reparented to the test process (tmux's
	// server is a descendant of the test, a subreaper): reap it.
	waitPidsFree(t, dir)

	pane.send(crBin + " restore --shell-job -i " + dir + "; echo rc=$?")
	last, _ := strconv.Atoi(pane.waitFor(`tick (\d+)\s*$`)[1])
	pane.waitFor(`tick ` + strconv.Itoa(last+2) + `\b`) // the loop goes on
	pane.run("send-keys", "-t", "0", "C-c")
	pane.waitFor(`inner\$\s*$`)
	pane.send("echo again=$$")
	require.Equal(t, strconv.Itoa(pid), pane.waitFor(`again=(\d+)`)[1], "the restored bash answers at its own prompt")
	out, err := exec.Command("ps", "-o", "pgid=", "-p", strconv.Itoa(pid)).CombinedOutput()
	require.NoError(t, err)
	require.Equal(t, strconv.Itoa(pid), strings.TrimSpace(string(out)), "it leads its process group again")
	pane.send("exit 7")
	pane.waitFor(`rc=7`)
}

// waitPidsFree waits until no process (nor zombie) holds a pid of the image.
func waitPidsFree(t *testing.T, dir string) {
	t.Helper()
	out, e, code := cr(t, "show", "-i", dir, "--json")
	require.Equal(t, 0, code, e)
	var ck struct {
		Inventory struct {
			Pids []int `json:"pids"`
		} `json:"inventory"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &ck))
	for _, pid := range ck.Inventory.Pids {
		testutil.Reap(pid, time.Second)
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err != nil {
				break
			}
			require.True(t, time.Now().Before(deadline), "pid %d still held", pid)
		}
	}
}

// TestShellJobStopContinue: a program restored as a shell job in the
// foreground stops on ^Z together with cr restore (the shell reports the
// job stopped and gets its prompt), goes on after fg with the terminal,
// and ^C then ends it: cr restore returns 130.
func TestShellJobStopContinue(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is not installed (.ci/run installs it)")
	}
	cr(t, "help") // build cr
	pane := newTmux(t)
	marker := fmt.Sprintf("crjob%d", time.Now().UnixNano())
	pane.send(`python3 -u -c 'import time, itertools, sys` + "\n" + `for i in itertools.count(): print("tick", i, flush=True); time.sleep(0.2)' ` + marker)
	pane.waitFor(`tick 2\b`)
	out, err := exec.Command("pgrep", "-f", marker).Output()
	require.NoError(t, err)
	pid, err := strconv.Atoi(strings.Fields(string(out))[0])
	require.NoError(t, err)

	dir := filepath.Join(t.TempDir(), "img")
	_, e, code := cr(t, "dump", "-t", strconv.Itoa(pid), "-o", dir, "--shell-job")
	require.Equal(t, 0, code, e)
	waitPidsFree(t, dir)
	pane.run("send-keys", "-t", "0", "clear", "Enter")
	pane.send(crBin + " restore --shell-job -i " + dir)
	last, _ := strconv.Atoi(pane.waitFor(`tick (\d+)\s*$`)[1])
	pane.waitFor(`tick ` + strconv.Itoa(last+1) + `\b`)

	pane.run("send-keys", "-t", "0", "C-z")
	pane.waitFor(`Stopped`)
	waitState(t, pid, 'T')
	pane.send("fg")
	pane.waitFor(`tick ` + strconv.Itoa(last+4) + `\b`) // going on, with the terminal
	pane.run("send-keys", "-t", "0", "C-c")
	pane.waitFor(`KeyboardInterrupt`) // then python dies of SIGINT: cr returns 128+2
	pane.send("echo rc=$?")
	pane.waitFor(`rc=130`)
}
