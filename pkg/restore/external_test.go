package restore_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/dump"
	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/restore"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// startWithFiles runs bash -c script as a session leader whose fds are
// files (nil: /dev/null).
func startWithFiles(t *testing.T, script string, files ...*os.File) *testutil.Proc {
	t.Helper()
	bash, err := exec.LookPath("bash")
	require.NoError(t, err)
	return startProgWithFiles(t, bash, files, "bash", "-c", script)
}

// startProgWithFiles runs bin with argv as a session leader whose fds are
// files (nil: /dev/null).
func startProgWithFiles(t *testing.T, bin string, files []*os.File, argv ...string) *testutil.Proc {
	t.Helper()
	testutil.RequireRoot(t)
	if len(argv) == 0 {
		argv = []string{filepath.Base(bin)}
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	require.NoError(t, err)
	defer null.Close()
	var fds []uintptr
	for _, f := range files {
		if f == nil {
			f = null
		}
		fds = append(fds, f.Fd())
	}
	dir := t.TempDir()
	pid, err := syscall.ForkExec(bin, argv, &syscall.ProcAttr{
		Dir: dir, Env: []string{"PATH=/usr/bin:/bin"}, Files: fds,
		Sys: &syscall.SysProcAttr{Setsid: true},
	})
	require.NoError(t, err)
	return testutil.Adopt(t, pid, dir)
}

// externals returns the external IDs of an image.
func externals(t *testing.T, dir string) []string {
	ck, err := image.Load(dir)
	require.NoError(t, err)
	var ids []string
	for _, f := range ck.Files {
		if f.External != "" {
			ids = append(ids, f.External)
		}
	}
	return ids
}

// readNumbers reads lines of numbers from r until EOF or n lines.
func readNumbers(t *testing.T, r *bufio.Reader, n int) []int {
	var out []int
	for len(out) < n || n < 0 {
		line, err := r.ReadString('\n')
		if err != nil {
			break
		}
		v, err := strconv.Atoi(strings.TrimSpace(line))
		require.NoError(t, err, "line %q", line)
		out = append(out, v)
	}
	return out
}

// TestExternalPipeInherited: a process writing into a pipe whose reader is
// outside the tree (here, the test) is dumped; restore refuses it without a
// replacement, naming the fd and --inherit-fd, and creates nothing; with
// InheritFds it writes on into the new pipe, continuing its count.
func TestExternalPipeInherited(t *testing.T) {
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	p := startProgWithFiles(t, testutil.BuildC(t, "fd3writer"), []*os.File{nil, nil, nil, w})
	w.Close()
	br := bufio.NewReader(r)
	seen := readNumbers(t, br, 3)
	require.Len(t, seen, 3)

	dir := filepath.Join(t.TempDir(), "img")
	_, err = dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: dir})
	require.NoError(t, err)
	p.Kill()
	reapTree(t, dir)
	seen = append(seen, readNumbers(t, br, -1)...) // to EOF: every writer is gone
	last := seen[len(seen)-1]

	ids := externals(t, dir)
	require.Len(t, ids, 1)
	require.True(t, strings.HasPrefix(ids[0], "pipe:["), ids[0])

	_, err = restore.Run(context.Background(), restore.Options{Dir: dir})
	require.Error(t, err)
	require.Contains(t, err.Error(), "fd 3 is "+ids[0])
	require.Contains(t, err.Error(), "--inherit-fd fd[N]:"+ids[0])
	_, serr := os.Stat("/proc/" + strconv.Itoa(p.Pid))
	require.True(t, os.IsNotExist(serr), "nothing was created")

	r2, w2, err := os.Pipe()
	require.NoError(t, err)
	defer r2.Close()
	res, err := restore.Run(context.Background(), restore.Options{Dir: dir, InheritFds: map[string]int{ids[0]: int(w2.Fd())}})
	w2.Close()
	require.NoError(t, err)
	q := testutil.Adopt(t, res.Pid, p.Dir)
	defer q.Kill()
	got := readNumbers(t, bufio.NewReader(r2), 3)
	require.Equal(t, []int{last + 1, last + 2, last + 3}, got, "the count goes on in the new pipe")
}

// TestExternalPipeReadEnd: unread bytes in a pipe the process reads from,
// written by someone outside the tree, are put into the replacement pipe.
func TestExternalPipeReadEnd(t *testing.T) {
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer w.Close()
	p := startWithFiles(t, `kill -STOP $$; cat > out`, r)
	r.Close()
	waitState(t, p.Pid, 'T')
	_, err = w.Write([]byte("hello\n"))
	require.NoError(t, err)

	dir := filepath.Join(t.TempDir(), "img")
	_, err = dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: dir})
	require.NoError(t, err)
	p.Kill()
	ids := externals(t, dir)
	require.Len(t, ids, 1)

	r2, w2, err := os.Pipe()
	require.NoError(t, err)
	res, err := restore.Run(context.Background(), restore.Options{Dir: dir, InheritFds: map[string]int{ids[0]: int(r2.Fd())}})
	r2.Close()
	require.NoError(t, err)
	q := testutil.Adopt(t, res.Pid, p.Dir)
	defer q.Kill()
	_, err = w2.Write([]byte("world\n"))
	require.NoError(t, err)
	w2.Close()
	require.NoError(t, unix.Kill(res.Pid, unix.SIGCONT))
	require.Equal(t, 0, q.Wait(t, 5*time.Second).ExitStatus())
	out, err := os.ReadFile(filepath.Join(p.Dir, "out"))
	require.NoError(t, err)
	require.Equal(t, "hello\nworld\n", string(out), "the byte saved from the old pipe come first")
}

func waitState(t *testing.T, pid int, want byte) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err == nil {
			s := string(b)
			if i := strings.LastIndexByte(s, ')'); i > 0 && i+2 < len(s) && s[i+2] == want {
				return
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("pid %d never reached state %c", pid, want)
}

// TestExternalSocketpair: a process holding one end of a socketpair whose
// other end is outside the tree talks through the end given at restore.
func TestExternalSocketpair(t *testing.T) {
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	mine, theirs := os.NewFile(uintptr(sp[0]), "mine"), os.NewFile(uintptr(sp[1]), "theirs")
	defer mine.Close()
	// An echo loop: reads a line on fd 0, answers it on fd 0.
	p := startWithFiles(t, `while read l; do echo "got $l" >&0; done`, theirs)
	theirs.Close()
	_, err = mine.Write([]byte("a\n"))
	require.NoError(t, err)
	br := bufio.NewReader(mine)
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "got a\n", line)

	dir := filepath.Join(t.TempDir(), "img")
	_, err = dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: dir})
	require.NoError(t, err)
	p.Kill()
	ids := externals(t, dir)
	require.Len(t, ids, 1)
	require.True(t, strings.HasPrefix(ids[0], "socket:["), ids[0])

	sp2, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	mine2, theirs2 := os.NewFile(uintptr(sp2[0]), "mine2"), os.NewFile(uintptr(sp2[1]), "theirs2")
	defer mine2.Close()
	res, err := restore.Run(context.Background(), restore.Options{Dir: dir, InheritFds: map[string]int{ids[0]: int(theirs2.Fd())}})
	theirs2.Close()
	require.NoError(t, err)
	q := testutil.Adopt(t, res.Pid, p.Dir)
	defer q.Kill()
	_, err = mine2.Write([]byte("b\n"))
	require.NoError(t, err)
	line, err = bufio.NewReader(mine2).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "got b\n", line)
}
