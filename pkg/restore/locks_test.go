package restore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/dump"
	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/restore"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// fdLocks returns the "lock:" lines of every fd of pid, "FD: line" without
// the lock's running number: which description and which process each
// lock belongs to (show_fd_locks in fs/locks.c).
func fdLocks(t *testing.T, pid int) []string {
	dir := fmt.Sprintf("/proc/%d/fdinfo", pid)
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		require.NoError(t, err)
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "lock:"); ok {
				f := strings.Fields(v)
				out = append(out, e.Name()+": "+strings.Join(f[1:], " "))
			}
		}
	}
	sort.Strings(out)
	return out
}

// getlk asks, from this process, which lock is in the way of a write lock
// on start+len of the file (cmd F_GETLK or F_OFD_GETLK).
func getlk(t *testing.T, path string, cmd int, start, length int64) unix.Flock_t {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(fd)
	fl := unix.Flock_t{Type: unix.F_WRLCK, Start: start, Len: length}
	require.NoError(t, unix.FcntlFlock(uintptr(fd), cmd, &fl))
	return fl
}

// flockFails tells whether a flock(how|LOCK_NB) on a new description of
// path fails with EWOULDBLOCK.
func flockFails(t *testing.T, path string, how int) bool {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(fd)
	err = unix.Flock(fd, how|unix.LOCK_NB)
	if err != nil {
		require.ErrorIs(t, err, unix.EWOULDBLOCK)
		return true
	}
	return false
}

// checkLocksOutside checks the locks of the locks fixture from this process.
func checkLocksOutside(t *testing.T, dir string, parent, child int) {
	w := func(n string) string { return filepath.Join(dir, n) }
	fl := getlk(t, w("posix.dat"), unix.F_GETLK, 10, 1)
	require.Equal(t, []any{int16(unix.F_WRLCK), int32(parent), int64(10), int64(20)}, []any{fl.Type, fl.Pid, fl.Start, fl.Len}, "posix.dat 10-29")
	fl = getlk(t, w("posix.dat"), unix.F_GETLK, 55, 1)
	require.Equal(t, []any{int16(unix.F_RDLCK), int32(child), int64(50), int64(10)}, []any{fl.Type, fl.Pid, fl.Start, fl.Len}, "posix.dat 50-59")
	fl = getlk(t, w("posix.dat"), unix.F_GETLK, 30, 20)
	require.Equal(t, int16(unix.F_UNLCK), fl.Type, "posix.dat 30-49")
	fl = getlk(t, w("ofd.dat"), unix.F_OFD_GETLK, 99, 1)
	require.Equal(t, []any{int16(unix.F_WRLCK), int32(-1), int64(0), int64(100)}, []any{fl.Type, fl.Pid, fl.Start, fl.Len}, "ofd.dat 0-99")
	fl = getlk(t, w("ofd.dat"), unix.F_OFD_GETLK, 1<<20, 1)
	require.Equal(t, []any{int16(unix.F_RDLCK), int64(200), int64(0)}, []any{fl.Type, fl.Start, fl.Len}, "ofd.dat 200-EOF")
	fl = getlk(t, w("shm.dat"), unix.F_GETLK, 120, 16)
	require.Equal(t, []any{int16(unix.F_WRLCK), int32(parent), int64(120), int64(8)}, []any{fl.Type, fl.Pid, fl.Start, fl.Len}, "shm.dat 120-127")
	fl = getlk(t, w("shm.dat"), unix.F_GETLK, 130, 1)
	require.Equal(t, []any{int16(unix.F_RDLCK), int32(parent)}, []any{fl.Type, fl.Pid}, "shm.dat 128-135")
	require.True(t, flockFails(t, w("flock.dat"), unix.LOCK_SH), "flock.dat is locked exclusively")
	require.True(t, flockFails(t, w("flocksh.dat"), unix.LOCK_EX), "flocksh.dat is locked")
	require.False(t, flockFails(t, w("flocksh.dat"), unix.LOCK_SH), "flocksh.dat is locked shared")
}

// TestRoundTripFileLocks: POSIX record locks of a parent and its child
// through one shared description, OFD locks with ranges, flocks (testdata/
// locks.c), and POSIX locks on a file that is also mapped MAP_SHARED through
// another fd, closed since (the sqlite WAL -shm pattern, which CRIU loses).
// Without --file-locks the dump is refused naming the file and the lock,
// and the tree runs on. With it, the restore (which needs the option too)
// gives every lock back to the same process and the same description: the
// fdinfo lock lines are the same, F_GETLK / F_OFD_GETLK / flock from
// another process see them, and the fixture sees them from inside. A
// conflicting lock taken meanwhile makes the restore fail, naming it.
func TestRoundTripFileLocks(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "locks"))
	c := p.IntInfo(t, "c")
	p.Check(t)
	checkLocksOutside(t, p.Dir, p.Pid, c)
	before := [][]string{fdLocks(t, p.Pid), fdLocks(t, c)}
	require.Len(t, before[0], 7, "%q", before[0])
	require.Len(t, before[1], 5, "%q", before[1])

	dir := filepath.Join(t.TempDir(), "img")
	_, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: dir})
	var re *dump.RefusedError
	require.True(t, errors.As(err, &re), "%v", err)
	require.ErrorContains(t, err, "posix.dat, holding a POSIX (fcntl) write lock on bytes 10-29")
	require.ErrorContains(t, err, "ofd.dat, holding an OFD (open file description) write lock on bytes 0-99")
	require.ErrorContains(t, err, "flock.dat, holding an exclusive flock lock on the whole file: dump with --file-locks to save it")
	p.Check(t) // refused: it runs on

	_, err = dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: dir, FileLocks: true})
	require.NoError(t, err)
	p.Kill()
	reapTree(t, dir)
	ck, err := image.Load(dir)
	require.NoError(t, err)
	require.True(t, ck.Inventory.Options.FileLocks)

	_, err = restore.Run(context.Background(), restore.Options{Dir: dir})
	require.ErrorContains(t, err, "restore it with --file-locks")
	require.ErrorIs(t, unix.Kill(p.Pid, 0), unix.ESRCH, "no process was created")

	// A lock in the way now: the restore fails naming it, nothing runs.
	fd, err := unix.Open(filepath.Join(p.Dir, "posix.dat"), unix.O_RDWR|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	require.NoError(t, unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &unix.Flock_t{Type: unix.F_WRLCK, Start: 25, Len: 1}))
	_, err = restore.Run(context.Background(), restore.Options{Dir: dir, FileLocks: true})
	require.ErrorContains(t, err, fmt.Sprintf("restore pid %d: fd 3 (%s): take the POSIX (fcntl) write lock on bytes 10-29 again: another process holds a conflicting lock on it now", p.Pid, filepath.Join(p.Dir, "posix.dat")))
	require.ErrorIs(t, unix.Kill(p.Pid, 0), unix.ESRCH, "no process was left")
	// The killed child was reparented to the test process (a subreaper):
	// reap it before looking.
	testutil.Reap(c, 2*time.Second)
	require.ErrorIs(t, unix.Kill(c, 0), unix.ESRCH, "no process was left")
	require.NoError(t, unix.Close(fd))

	res, err := restore.Run(context.Background(), restore.Options{Dir: dir, FileLocks: true})
	require.NoError(t, err)
	q := testutil.Adopt(t, res.Pid, p.Dir)
	q.Info = p.Info
	t.Cleanup(func() { unix.Kill(c, unix.SIGKILL); testutil.Reap(c, 2*time.Second) })
	require.Equal(t, before, [][]string{fdLocks(t, q.Pid), fdLocks(t, c)}, "fdinfo lock lines of the parent and the child")
	checkLocksOutside(t, p.Dir, p.Pid, c)
	q.Check(t)
	q.Check(t)
	require.Equal(t, 0, q.Stop(t))
}

// TestDumpLeaseRefused: a lease (F_SETLEASE) is refused with --file-locks,
// naming the file and the lease; the process runs on.
func TestDumpLeaseRefused(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "locks"), "lease")
	_, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: filepath.Join(t.TempDir(), "img"), FileLocks: true})
	var re *dump.RefusedError
	require.True(t, errors.As(err, &re), "%v", err)
	for _, r := range re.Reasons { // the parent's fd and the child's (the lease is the description's)
		require.ErrorContains(t, r, "fd 8 is "+filepath.Join(p.Dir, "lease.dat")+", holding a read lease (fcntl F_SETLEASE, active): not supported yet")
	}
	require.Len(t, re.Reasons, 2, "only the lease: %v", err)
	p.Check(t)
}
