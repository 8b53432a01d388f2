package restore_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// fdFlags reads the "flags:" line of /proc/PID/fdinfo/FD (octal).
func fdFlags(t *testing.T, pid, fd int) uint32 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "flags:"); ok {
			x, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32)
			require.NoError(t, err)
			return uint32(x)
		}
	}
	t.Fatalf("no flags line in fdinfo %d of pid %d", fd, pid)
	return 0
}

// TestOPath: O_PATH descriptors on a symlink itself (O_NOFOLLOW), a
// directory (O_DIRECTORY) and a regular file come back with their flags,
// on the same inodes: checked from inside (F_GETFL, fstatat and
// readlinkat on the fd, no I/O) and from outside (fdinfo flags, the fd
// link, the inode behind it).
func TestOPath(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "opath"))
	p.Check(t)
	type want struct {
		key, name string
		flags     uint32 // of O_PATH|O_NOFOLLOW|O_DIRECTORY
		ino       uint64
	}
	const mask = unix.O_PATH | unix.O_NOFOLLOW | unix.O_DIRECTORY
	ws := []want{
		{"fd_link", "link", unix.O_PATH | unix.O_NOFOLLOW, uint64(p.IntInfo(t, "ino_link"))},
		{"fd_dir", "sub", unix.O_PATH | unix.O_DIRECTORY, uint64(p.IntInfo(t, "ino_dir"))},
		{"fd_file", "data", unix.O_PATH, uint64(p.IntInfo(t, "ino_file"))},
	}
	for _, w := range ws {
		require.Equal(t, w.flags, fdFlags(t, p.Pid, p.IntInfo(t, w.key))&mask, "%s before the dump", w.name)
	}
	q, ck := dumpAndRestore(t, p)
	opaths := 0
	for _, f := range ck.Files {
		if f.Type == "opath" {
			opaths++
		}
	}
	require.Equal(t, 3, opaths, "three O_PATH descriptions in the image")
	for _, w := range ws {
		fd := q.IntInfo(t, w.key)
		require.Equal(t, w.flags, fdFlags(t, q.Pid, fd)&mask, "%s after the restore", w.name)
		link := fmt.Sprintf("/proc/%d/fd/%d", q.Pid, fd)
		target, err := os.Readlink(link)
		require.NoError(t, err)
		require.Equal(t, filepath.Join(p.Dir, w.name), target)
		var st unix.Stat_t
		require.NoError(t, unix.Stat(link, &st))
		require.Equal(t, w.ino, st.Ino, "%s: the same inode", w.name)
	}
	q.Check(t)
	require.Equal(t, 0, q.Stop(t))
}
