package restore_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cr-tools/cr/pkg/dump"
	"github.com/stretchr/testify/require"
)

// TestUnixPendingWithDataRefused: a client whose connection still waits in
// a listener's accept queue and has sent data: the data sits in the server
// end, which cannot be read without accepting it, so the dump refuses
// (naming the socket and the bytes) instead of losing it, and the program
// later accepts the connection and gets its data.
func TestUnixPendingWithDataRefused(t *testing.T) {
	py, err := exec.LookPath("python3")
	require.NoError(t, err)
	dir := t.TempDir()
	sock := filepath.Join(dir, "s.sock")
	script := `
import os, socket, sys, time
path, out = sys.argv[1], sys.argv[2]
l = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
l.bind(path); l.listen(4)
c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
c.connect(path); c.sendall(b"hello-pending")
open(out + ".ready", "w").close()
while not os.path.exists(out + ".go"):
    time.sleep(0.02)
a, _ = l.accept()
open(out, "w").write(a.recv(100).decode())
`
	p := startProgWithFiles(t, py, []*os.File{nil, nil, nil}, "python3", "-c", script, sock, filepath.Join(dir, "got"))
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(dir, "got.ready")); err == nil {
			break
		}
		require.True(t, time.Now().Before(deadline), "the script never got ready")
	}
	_, err = dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: filepath.Join(t.TempDir(), "img")})
	require.Error(t, err)
	require.Contains(t, err.Error(), "whose accept queue holds connections whose clients sent data already")
	require.Contains(t, err.Error(), "bytes of buffers)")
	require.True(t, p.Alive())
	require.NoError(t, os.WriteFile(filepath.Join(dir, "got.go"), nil, 0o600))
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if b, err := os.ReadFile(filepath.Join(dir, "got")); err == nil && len(b) > 0 {
			require.True(t, strings.HasPrefix(string(b), "hello-pending"), "%q", b)
			break
		}
		require.True(t, time.Now().Before(deadline), "the program never got its data")
	}
}
