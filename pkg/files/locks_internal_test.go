package files

import (
	"testing"

	"github.com/cr-tools/cr/pkg/image"
	"github.com/stretchr/testify/require"
)

// TestParseLock: the lock lines of fdinfo (lock_get_status in fs/locks.c)
// become FileLocks; leases and anything unknown are an error.
func TestParseLock(t *testing.T) {
	for line, want := range map[string]image.FileLock{
		"1: POSIX  ADVISORY  WRITE 4242 fe:00:1234 10 29": {Kind: image.LockPOSIX, Type: "write", Start: 10, End: 29},
		"2: OFDLCK ADVISORY  READ  -1 fe:00:1234 200 EOF": {Kind: image.LockOFD, Type: "read", Start: 200, End: -1},
		"3: FLOCK  ADVISORY  WRITE 77 fe:00:99 0 EOF":     {Kind: image.LockFlock, Type: "write", End: -1, Pid: 77},
		"4: FLOCK  ADVISORY  READ  -1 fe:00:99 0 EOF":     {Kind: image.LockFlock, Type: "read", End: -1},
	} {
		got, err := parseLock(line)
		require.NoError(t, err, line)
		require.Equal(t, want, got, line)
	}
	for _, line := range []string{"1: LEASE  ACTIVE    READ 4242 fe:00:1234 0 EOF", "1: DELEG  ACTIVE    READ 1 fe:00:1 0 EOF",
		"1: POSIX  ADVISORY  UNLCK 4242 fe:00:1234 0 EOF", "1: POSIX", "1: POSIX  ADVISORY  READ 1 fe:00:1 x 9"} {
		_, err := parseLock(line)
		require.Error(t, err, line)
	}
}

// TestValidateLocks: a loaded image's locks are checked against their
// domain and the processes that hold the file.
func TestValidateLocks(t *testing.T) {
	c := &image.Checkpoint{Processes: []*image.Process{{Task: image.Task{Pid: 10}, Fds: []image.Fd{{Fd: 3, FileID: 1}}}}}
	ok := image.FileLock{Kind: image.LockPOSIX, Type: "write", Start: 0, End: 9, Pid: 10}
	require.NoError(t, validateLocks(c, &image.File{ID: 1, Locks: []image.FileLock{ok}}))
	for bad, l := range map[string]image.FileLock{
		"unknown kind":            {Kind: "lease", Type: "read", End: -1},
		"unknown type":            {Kind: image.LockOFD, Type: "rw", End: -1},
		"bad range":               {Kind: image.LockOFD, Type: "read", Start: 10, End: 9},
		"a flock lock on a range": {Kind: image.LockFlock, Type: "read", Start: 0, End: 9},
		"does not hold the file":  {Kind: image.LockPOSIX, Type: "read", End: -1, Pid: 11},
	} {
		require.ErrorContains(t, validateLocks(c, &image.File{ID: 1, Locks: []image.FileLock{l}}), bad)
	}
}

// TestDescribeLock: a refused lock is named as the user knows it: flock
// locks are exclusive or shared, POSIX and OFD locks write or read.
func TestDescribeLock(t *testing.T) {
	for line, want := range map[string]string{
		"3: FLOCK  ADVISORY  WRITE 77 fe:00:99 0 EOF":     "an exclusive flock lock on the whole file",
		"4: FLOCK  ADVISORY  READ  -1 fe:00:99 0 EOF":     "a shared flock lock on the whole file",
		"1: POSIX  ADVISORY  WRITE 4242 fe:00:1234 10 29": "a POSIX (fcntl) write lock on bytes 10-29",
		"2: OFDLCK ADVISORY  READ  -1 fe:00:1234 200 EOF": "an OFD (open file description) read lock on bytes 200-EOF",
	} {
		require.Equal(t, want, describeLock(line), line)
	}
	require.Equal(t, "the shared flock lock on the whole file", lockWords(image.FileLock{Kind: image.LockFlock, Type: "read", End: -1}))
	require.Equal(t, "fd 4 is /x, holding a shared flock lock on the whole file: dump with --file-locks to save it",
		lockError(4, "/x", []string{"4: FLOCK  ADVISORY  READ  -1 fe:00:99 0 EOF"}).Error())
}
