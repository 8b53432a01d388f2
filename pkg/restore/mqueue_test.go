package restore_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/dump"
	"github.com/cr-tools/cr/pkg/restore"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// mqAttr is struct mq_attr.
type mqAttr struct {
	Flags, MaxMsg, MsgSize, CurMsgs int64
	_                               [4]int64
}

// mqLook opens the queue "/NAME" from this process and returns its
// attributes and mode (ok false: it does not exist).
func mqLook(t *testing.T, name string) (a mqAttr, mode uint32, ok bool) {
	p, err := unix.BytePtrFromString(strings.TrimPrefix(name, "/"))
	require.NoError(t, err)
	fd, _, e := unix.Syscall6(unix.SYS_MQ_OPEN, uintptr(unsafe.Pointer(p)), unix.O_RDONLY|unix.O_CLOEXEC, 0, 0, 0, 0)
	if e == unix.ENOENT {
		return a, 0, false
	}
	require.Zero(t, e, "mq_open %s", name)
	defer unix.Close(int(fd))
	_, _, e = unix.Syscall(unix.SYS_MQ_GETSETATTR, fd, 0, uintptr(unsafe.Pointer(&a)))
	require.Zero(t, e, "mq_getattr %s", name)
	var st unix.Stat_t
	require.NoError(t, unix.Fstat(int(fd), &st))
	return a, st.Mode & 0o7777, true
}

func mqUnlink(name string) {
	if p, err := unix.BytePtrFromString(strings.TrimPrefix(name, "/")); err == nil {
		unix.Syscall(unix.SYS_MQ_UNLINK, uintptr(unsafe.Pointer(p)), 0, 0)
	}
}

// startMqueue starts testdata/mqueue.c and removes its queues at the end.
func startMqueue(t *testing.T, mode string) (*testutil.Proc, []string) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "mqueue"), mode)
	names := strings.Split(p.Info["names"], ",")
	require.Len(t, names, 2)
	t.Cleanup(func() {
		for _, n := range names {
			mqUnlink(n)
		}
	})
	return p, names
}

// TestRoundTripMqueue: empty POSIX message queues (testdata/mqueue.c), one
// opened twice (two descriptions, O_RDWR|O_NONBLOCK and O_WRONLY) with its
// own attributes and mode, one with the defaults. The queues outlive the
// killed process: the restore reuses them when they are as the image has
// them; when they are gone it makes them again with the same name,
// attributes, mode. Checked from inside (mq_getattr, access modes, a
// message through one description comes out of the other) and outside.
// A queue of the name that differs (here: holds a message) is refused,
// naming it, before anything is made.
func TestRoundTripMqueue(t *testing.T) {
	for _, how := range []string{"reused", "made"} {
		t.Run(how, func(t *testing.T) {
			p, names := startMqueue(t, "empty")
			p.Check(t)
			a0, mode0, ok := mqLook(t, names[0])
			require.True(t, ok)
			require.Equal(t, []any{int64(5), int64(100), uint32(0o640)}, []any{a0.MaxMsg, a0.MsgSize, mode0})
			b0, modeb, _ := mqLook(t, names[1])
			dir := filepath.Join(t.TempDir(), "img")
			_, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: dir})
			require.NoError(t, err)
			p.Kill()
			if how == "made" {
				for _, n := range names {
					mqUnlink(n)
				}
			} else {
				// In the way: the queue holds a message now.
				pn, _ := unix.BytePtrFromString(strings.TrimPrefix(names[0], "/"))
				fd, _, e := unix.Syscall6(unix.SYS_MQ_OPEN, uintptr(unsafe.Pointer(pn)), unix.O_RDWR|unix.O_CLOEXEC, 0, 0, 0, 0)
				require.Zero(t, e)
				defer unix.Close(int(fd))
				msg := []byte("x")
				_, _, e = unix.Syscall6(unix.SYS_MQ_TIMEDSEND, fd, uintptr(unsafe.Pointer(&msg[0])), 1, 0, 0, 0)
				require.Zero(t, e)
				_, err = restore.Run(context.Background(), restore.Options{Dir: dir})
				require.ErrorContains(t, err, fmt.Sprintf("the POSIX message queue %s exists with 1 message(s) in it", names[0]))
				require.ErrorIs(t, unix.Kill(p.Pid, 0), unix.ESRCH, "no process was created")
				buf := make([]byte, 100)
				_, _, e = unix.Syscall6(unix.SYS_MQ_TIMEDRECEIVE, fd, uintptr(unsafe.Pointer(&buf[0])), 100, 0, 0, 0)
				require.Zero(t, e)
			}
			res, err := restore.Run(context.Background(), restore.Options{Dir: dir})
			require.NoError(t, err)
			q := testutil.Adopt(t, res.Pid, p.Dir)
			q.Info = p.Info
			a1, mode1, ok := mqLook(t, names[0])
			require.True(t, ok)
			a0.Flags, a1.Flags = 0, 0
			require.Equal(t, []any{a0, mode0}, []any{a1, mode1})
			b1, modeb1, _ := mqLook(t, names[1])
			require.Equal(t, []any{b0, modeb}, []any{b1, modeb1})
			q.Check(t)
			q.Check(t)
			require.Equal(t, 0, q.Stop(t))
		})
	}
}

// TestDumpMqueueRefused: a queue holding messages, and a queue with a
// notification registration, are refused naming the queue; the process
// runs on, its messages still there.
func TestDumpMqueueRefused(t *testing.T) {
	for mode, want := range map[string]string{
		"full":   "fd 3 is the POSIX message queue %s holding 2 message(s) (reading them would take them out of the queue)",
		"notify": "fd 3 is the POSIX message queue %s with a notification registered by pid %d (mq_notify, signal 10",
	} {
		t.Run(mode, func(t *testing.T) {
			p, names := startMqueue(t, mode)
			dir := filepath.Join(t.TempDir(), "img")
			_, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: dir})
			var re *dump.RefusedError
			require.True(t, errors.As(err, &re), "%v", err)
			if mode == "full" {
				require.ErrorContains(t, err, fmt.Sprintf(want, names[0]))
				a, _, _ := mqLook(t, names[0])
				require.Equal(t, int64(2), a.CurMsgs, "the messages are still there")
			} else {
				require.ErrorContains(t, err, fmt.Sprintf(want, names[0], p.Pid))
			}
			require.True(t, p.Alive())
		})
	}
}
