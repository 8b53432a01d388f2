package restore_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cr-tools/cr/pkg/dump"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestCttyWithoutFdRefused: a session leader whose controlling terminal is
// a pty whose master lives outside the tree, while it holds no fd of it,
// is refused at dump (restore could not give it its terminal back), naming
// --shell-job; it runs on.
func TestCttyWithoutFdRefused(t *testing.T) {
	py, err := exec.LookPath("python3")
	require.NoError(t, err)
	dir := t.TempDir()
	out := filepath.Join(dir, "child")
	script := `
import os, pty, time, sys
pid, fd = pty.fork()
if pid == 0:
    os.closerange(0, 4096)
    while True: time.sleep(0.1)
open(sys.argv[1] + ".tmp", "w").write(str(pid)); os.rename(sys.argv[1] + ".tmp", sys.argv[1])
while True: time.sleep(1)
`
	p := startProgWithFiles(t, py, []*os.File{nil, nil, nil}, "python3", "-c", script, out)
	var child int
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if b, err := os.ReadFile(out); err == nil {
			child, _ = strconv.Atoi(string(b))
			break
		}
		require.True(t, time.Now().Before(deadline), "the script never forked")
	}
	t.Cleanup(func() { unix.Kill(child, unix.SIGKILL) })
	_, err = dump.Run(context.Background(), dump.Options{Pid: child, Dir: filepath.Join(t.TempDir(), "img")})
	require.Error(t, err)
	require.Contains(t, err.Error(), "has a controlling terminal")
	require.Contains(t, err.Error(), "--shell-job")
	require.NoError(t, unix.Kill(child, 0))
	require.True(t, p.Alive())
}
