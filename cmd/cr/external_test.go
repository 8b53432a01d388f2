package main

import (
	"bufio"
	"encoding/json"
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

// TestCLIRestoreInPipeline: a process whose stdout and stderr were a pipe
// to a reader outside the tree (`prog | tee log`) is dumped; `cr show`
// names the external pipe; `cr restore -d` run with its own stdout a pipe
// (`cr restore -d -i DIR | reader`) gives the process that pipe, and the
// count goes on in it.
func TestCLIRestoreInPipeline(t *testing.T) {
	testutil.RequireRoot(t)
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	require.NoError(t, err)
	defer null.Close()
	bash, err := exec.LookPath("bash")
	require.NoError(t, err)
	wd := t.TempDir()
	pid, err := syscall.ForkExec(bash, []string{"bash", "-c", `i=0; while :; do echo $i; i=$((i+1)); sleep 0.01; done`}, &syscall.ProcAttr{
		Dir: wd, Env: []string{"PATH=/usr/bin:/bin"}, Files: []uintptr{null.Fd(), w.Fd(), w.Fd()},
		Sys: &syscall.SysProcAttr{Setsid: true},
	})
	require.NoError(t, err)
	p := testutil.Adopt(t, pid, wd)
	w.Close()
	br := bufio.NewReader(r)
	var last int
	read := func(br *bufio.Reader, n int) []int {
		var out []int
		for n < 0 || len(out) < n {
			line, err := br.ReadString('\n')
			if err != nil {
				break
			}
			v, err := strconv.Atoi(strings.TrimSpace(line))
			require.NoError(t, err)
			out = append(out, v)
		}
		return out
	}
	seen := read(br, 2)
	dir := filepath.Join(t.TempDir(), "img")
	_, e, code := cr(t, "dump", "-t", strconv.Itoa(pid), "-o", dir)
	require.Equal(t, 0, code, e)
	p.Kill()
	reapImage(t, dir)
	seen = append(seen, read(br, -1)...)
	last = seen[len(seen)-1]

	out, e, code := cr(t, "show", "-i", dir)
	require.Equal(t, 0, code, e)
	require.Regexp(t, `(?m)^\s+1 pipe .* external pipe:\[\d+\]$`, out)

	r2, w2, err := os.Pipe()
	require.NoError(t, err)
	defer r2.Close()
	cmd := exec.Command(crBin, "restore", "-d", "-i", dir)
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = w2, &stderr
	require.NoError(t, cmd.Run(), stderr.String())
	w2.Close()
	q := testutil.Adopt(t, pid, wd)
	defer q.Kill()
	done := make(chan []int, 1)
	go func() { done <- read(bufio.NewReader(r2), 3) }()
	select {
	case got := <-done:
		require.Equal(t, []int{last + 1, last + 2, last + 3}, got)
	case <-time.After(5 * time.Second):
		t.Fatal("no output from the restored process on cr restore's stdout")
	}
}

// reapImage reaps the dumped (killed) processes of an image other than the
// root: they were reparented to the test process, a subreaper.
func reapImage(t *testing.T, dir string) {
	t.Helper()
	out, e, code := cr(t, "show", "-i", dir, "--json")
	require.Equal(t, 0, code, e)
	var ck struct {
		Inventory struct {
			Pids []int `json:"pids"`
		} `json:"inventory"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &ck))
	for _, pid := range ck.Inventory.Pids[1:] {
		testutil.Reap(pid, 2*time.Second)
	}
}

// TestCLIExternalNeedsInherit: an external pipe end at an fd above 2 makes
// the restore need --inherit-fd; cr check -t and cr dump say so up front.
func TestCLIExternalNeedsInherit(t *testing.T) {
	testutil.RequireRoot(t)
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	require.NoError(t, err)
	defer null.Close()
	bin := testutil.BuildC(t, "fd3writer")
	wd := t.TempDir()
	pid, err := syscall.ForkExec(bin, []string{"fd3writer"}, &syscall.ProcAttr{
		Dir: wd, Files: []uintptr{null.Fd(), null.Fd(), null.Fd(), w.Fd()},
		Sys: &syscall.SysProcAttr{Setsid: true},
	})
	require.NoError(t, err)
	p := testutil.Adopt(t, pid, wd)
	w.Close()
	go func() { // keep the pipe from filling up
		buf := make([]byte, 4096)
		for {
			if _, err := r.Read(buf); err != nil {
				return
			}
		}
	}()
	out, e, code := cr(t, "check", "-t", strconv.Itoa(pid))
	require.Equal(t, 0, code, e)
	require.Regexp(t, `note: pid \d+ fd 3 is pipe:\[\d+\], whose other end is outside the tree: cr restore will need --inherit-fd fd\[N\]:pipe:\[\d+\]`, out)
	dir := filepath.Join(t.TempDir(), "img")
	_, e, code = cr(t, "dump", "-t", strconv.Itoa(pid), "-o", dir, "--leave-running")
	require.Equal(t, 0, code, e)
	require.Regexp(t, `cr: warning: pid \d+ fd 3 is pipe:\[\d+\], whose other end was outside the dumped tree: cr restore will need --inherit-fd`, e)
	require.True(t, p.Alive())
}
