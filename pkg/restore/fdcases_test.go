package restore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/dump"
	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/restore"
	"github.com/stretchr/testify/require"
)

// fdCase starts the fdcases fixture in mode.
func fdCase(t *testing.T, mode string) *testutil.Proc {
	t.Helper()
	testutil.RequireRoot(t)
	return testutil.Start(t, testutil.BuildC(t, "fdcases"), mode)
}

// dumpAndRestore dumps p (killing it) and restores it; it returns the
// restored process and the image.
func dumpAndRestore(t *testing.T, p *testutil.Proc) (*testutil.Proc, *image.Checkpoint) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "img")
	_, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: dir})
	require.NoError(t, err)
	p.Kill()
	reapTree(t, dir)
	ck, err := image.Load(dir)
	require.NoError(t, err)
	res, err := restore.Run(context.Background(), restore.Options{Dir: dir})
	require.NoError(t, err)
	require.Equal(t, p.Pid, res.Pid)
	q := testutil.Adopt(t, res.Pid, p.Dir)
	q.Info = p.Info
	return q, ck
}

// refused dumps p, expects a refusal naming every string of want, and
// checks that p is running as before and no image is left.
func refused(t *testing.T, p *testutil.Proc, want ...string) {
	t.Helper()
	parent := t.TempDir()
	_, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: filepath.Join(parent, "img")})
	require.Error(t, err, "dump of pid %d", p.Pid)
	t.Logf("refused: %v", err)
	for _, w := range want {
		require.Contains(t, err.Error(), w)
	}
	ents, _ := os.ReadDir(parent)
	require.Empty(t, ents, "a refused dump leaves nothing behind")
	require.True(t, p.Alive())
	p.Check(t)
}

// TestProcfsPaths: fds on /proc/self/..., /proc/thread-self/..., the
// directory /proc/self and a cwd there are reopened for the restored
// process; /proc/meminfo stays an ordinary file.
func TestProcfsPaths(t *testing.T) {
	p := fdCase(t, "procself")
	p.Check(t)
	q, ck := dumpAndRestore(t, p)
	procs := 0
	for _, f := range ck.Files {
		if f.Ident.Proc != nil {
			procs++
			require.Equal(t, p.Pid, f.Ident.Proc.Pid, "file %s", f.Ident.Path)
		}
	}
	require.Equal(t, 3, procs, "/proc/self/stat, /proc/thread-self/status and /proc/self are recorded relative to the pid")
	require.NotNil(t, ck.Processes[0].FS.Cwd.Proc, "cwd /proc/self")
	q.Check(t)
	q.Check(t)
	require.Equal(t, 0, q.Stop(t))
}

// TestProcfsOutsideTree: an fd on /proc/1/stat is refused at dump, naming
// the fd, the path and the pid.
func TestProcfsOutsideTree(t *testing.T) {
	p := fdCase(t, "procother")
	refused(t, p, fmt.Sprintf("pid %d: fd 3 is /proc/1/stat, which names pid 1, a process outside the dumped tree", p.Pid))
}

// TestPacketPipe: a packet-mode pipe and a packet-mode FIFO each holding two
// packets give them back one per read.
func TestPacketPipe(t *testing.T) {
	p := fdCase(t, "packet")
	p.Check(t)
	q, ck := dumpAndRestore(t, p)
	saved := 0
	for _, f := range ck.Files {
		if f.Pipe != nil && len(f.Pipe.Data) > 0 {
			require.Equal(t, []image.PipeChunk{{Len: 2, Packet: true}, {Len: 2, Packet: true}}, f.Pipe.Chunks, "%s", f.Ident.Path)
			saved++
		}
	}
	require.Equal(t, 2, saved, "the pipe's and the FIFO's packets")
	q.Check(t)
	q.Check(t)
	require.Equal(t, 0, q.Stop(t))
}

// TestEpollOneshotDisarmed: a fired EPOLLONESHOT entry comes back disarmed
// (nothing reported, even on a hang-up) and can be re-armed.
func TestEpollOneshotDisarmed(t *testing.T) {
	p := fdCase(t, "oneshot")
	q, ck := dumpAndRestore(t, p)
	var ev uint32
	for _, f := range ck.Files {
		for _, e := range f.Epoll {
			ev = e.Events
		}
	}
	require.Equal(t, uint32(1<<30), ev, "the image holds a disarmed entry (EPOLLONESHOT only)")
	q.Check(t)
	require.Equal(t, 0, q.Stop(t))
}

// TestEpollOneshotNotReady: a fired one-shot entry whose file is not ready
// cannot be brought back disarmed: the dump refuses it, naming the fd.
func TestEpollOneshotNotReady(t *testing.T) {
	p := fdCase(t, "oneshot-empty")
	refused(t, p, fmt.Sprintf("pid %d: fd 3 is an epoll instance with a one-shot entry for fd 4", p.Pid))
}

// TestLocksRefused: a process holding a flock, POSIX or OFD lock is refused
// at dump, naming the fd, the file and the lock; it keeps its lock.
func TestLocksRefused(t *testing.T) {
	for mode, lock := range map[string]string{
		"flock": "an exclusive flock lock on the whole file: dump with --file-locks to save it",
		"posix": "a POSIX (fcntl) write lock on bytes 10-29: dump with --file-locks to save it",
		"ofd":   "an OFD (open file description) read lock on the whole file: dump with --file-locks to save it",
	} {
		t.Run(mode, func(t *testing.T) {
			p := fdCase(t, mode)
			path := filepath.Join(p.Dir, "locked")
			refused(t, p, fmt.Sprintf("pid %d: fd 3 is %s, holding %s", p.Pid, path, lock))
			info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/3", p.Pid))
			require.NoError(t, err)
			require.Contains(t, string(info), "lock:", "the lock is still held")
		})
	}
}

// TestAnonKindMessages: anonymous-inode files cr cannot save are named by
// their kind, with the right article: see TestOddRefusals (pidfds and
// signalfds, the kinds this test used, are saved now).
