package restore_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/dump"
	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/ipc"
	"github.com/cr-tools/cr/pkg/restore"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// removeIPCAtEnd removes object kind id when the test ends, if it still
// holds key (so that an id reused meanwhile by someone else is left alone).
func removeIPCAtEnd(t *testing.T, kind string, id int, key int32) {
	t.Cleanup(func() {
		objs, _ := ipc.List(kind)
		for _, o := range objs {
			if o.ID == id && o.Key == key {
				ipc.Remove(kind, id)
			}
		}
	})
}

// startSysV starts the sysv fixture and makes sure its objects go away
// when the test ends, whatever happens.
func startSysV(t *testing.T, args ...string) *testutil.Proc {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "sysv"), args...)
	removeIPCAtEnd(t, ipc.Shm, p.IntInfo(t, "shma"), int32(p.HexInfo(t, "keya")))
	removeIPCAtEnd(t, ipc.Shm, p.IntInfo(t, "shmb"), 0) // gone by then, unless a restore failed to mark it
	removeIPCAtEnd(t, ipc.Sem, p.IntInfo(t, "sem"), int32(p.HexInfo(t, "keys")))
	removeIPCAtEnd(t, ipc.Msg, p.IntInfo(t, "msg"), int32(p.HexInfo(t, "keyq")))
	return p
}

// sysvState is what /proc/sysvipc shows of the fixture's objects, without
// the pids (the last user's pid is cr's after a restore).
func sysvState(t *testing.T, p *testutil.Proc) map[string]ipc.Object {
	out := map[string]ipc.Object{}
	want := map[string]int{"shm:a": p.IntInfo(t, "shma"), "shm:b": p.IntInfo(t, "shmb"), "sem:s": p.IntInfo(t, "sem"), "msg:q": p.IntInfo(t, "msg")}
	for name, id := range want {
		kind := name[:3]
		objs, err := ipc.List(kind)
		require.NoError(t, err)
		for _, o := range objs {
			if o.ID == id {
				o.Cpid, o.Lpid, o.Lspid, o.Lrpid = 0, 0, 0, 0
				out[name] = o
			}
		}
	}
	return out
}

func msgget(t *testing.T, key int32) int {
	id, _, e := unix.Syscall(unix.SYS_MSGGET, uintptr(key), unix.IPC_CREAT|unix.IPC_EXCL|0o600, 0)
	require.Zero(t, e, "msgget")
	removeIPCAtEnd(t, ipc.Msg, int(id), key)
	return int(id)
}

// TestHasSemUndo: of the fixture's parent (one thread, no semop) and
// child (a semop with SEM_UNDO), only the child has a SEM_UNDO list; the
// test process, whose threads share one, has one too.
func TestHasSemUndo(t *testing.T) {
	p := startSysV(t)
	c := p.IntInfo(t, "c")
	has, err := ipc.HasSemUndo([]int{p.Pid, c, os.Getpid()})
	require.NoError(t, err)
	require.Equal(t, map[int]bool{p.Pid: false, c: true, os.Getpid(): true}, has)
	_, err = ipc.HasSemUndo([]int{1 << 30})
	require.ErrorContains(t, err, "kcmp KCMP_SYSVSEM of pid 1073741824")
}

// TestRoundTripSysV: SysV IPC objects of a parent and child (testdata/sysv.c):
// a segment attached read-write by the parent and read-only by the child
// at another address, one marked for removal while both attach it, a
// semaphore set (values, creator) and a message queue with typed messages.
// After the restore every object has its id, key, owner, mode and
// contents, the attachments are where they were, checked from inside and
// from outside (/proc/sysvipc, maps, ipcs); the messages come out in
// order with their types ("drain"). An unrelated queue is not dumped, and
// the child's SEM_UNDO list is reported (-v).
func TestRoundTripSysV(t *testing.T) {
	for _, mode := range []string{"check", "drain"} {
		t.Run(mode, func(t *testing.T) {
			p := startSysV(t, mode)
			if mode == "check" {
				p.Check(t) // "drain" drains on its first check: after the restore
			}
			other := msgget(t, 0) // IPC_PRIVATE, not the tree's
			before := sysvState(t, p)
			require.Len(t, before, 4)
			o1 := look(t, p.Pid)
			c := p.IntInfo(t, "c")
			dir := filepath.Join(t.TempDir(), "img")
			var log bytes.Buffer
			_, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: dir, Log: &log})
			require.NoError(t, err)
			p.Kill()
			reapTree(t, dir)
			require.Contains(t, log.String(), fmt.Sprintf("pid %d has a SEM_UNDO list", c))
			require.NotContains(t, log.String(), fmt.Sprintf("pid %d has a SEM_UNDO list", p.Pid), "the parent never used SEM_UNDO")

			ck, err := image.Load(dir)
			require.NoError(t, err)
			require.Len(t, ck.IPC.Shm, 2)
			require.Len(t, ck.IPC.Sem, 1)
			require.Len(t, ck.IPC.Msg, 1, "the unrelated queue %d is not dumped", other)
			var sum bytes.Buffer
			image.WriteSummary(&sum, ck)
			require.Contains(t, sum.String(), fmt.Sprintf("shm key %#08x id %d", p.HexInfo(t, "keya"), p.IntInfo(t, "shma")))
			require.Contains(t, sum.String(), "marked for removal")
			require.Contains(t, sum.String(), fmt.Sprintf("attached by pid %d at %#x", c, p.HexInfo(t, "ca")))
			require.Contains(t, sum.String(), "values [5 1 42]")
			require.Contains(t, sum.String(), "4 messages, 18 bytes")

			// The objects outlive the processes (all but the removed B).
			left := sysvState(t, p)
			require.Len(t, left, 3)
			require.Zero(t, left["shm:a"].Nattch)

			res, err := restore.Run(context.Background(), restore.Options{Dir: dir})
			require.NoError(t, err)
			q := testutil.Adopt(t, res.Pid, p.Dir)
			q.Info = p.Info
			require.Equal(t, before, sysvState(t, q), "/proc/sysvipc")
			o2 := look(t, q.Pid)
			require.Equal(t, o1.maps, o2.maps, "memory map")
			cmaps := mergedMaps(t, c)
			require.Contains(t, cmaps, fmt.Sprintf("%x-%x r--s /SYSV%08x (deleted)", p.HexInfo(t, "ca"), p.HexInfo(t, "ca")+(68<<10), p.HexInfo(t, "keya")),
				"the child's read-only attachment")
			out, err := exec.Command("ipcs", "-m").CombinedOutput()
			require.NoError(t, err, "%s", out)
			require.Contains(t, string(out), strconv.Itoa(p.IntInfo(t, "shma")))
			q.Check(t)
			q.Check(t)
			require.Equal(t, 0, q.Stop(t))
		})
	}
}

// TestRestoreSysVInTheWay: restore refuses, before creating anything,
// when an object holds an image object's key or id in another way than
// as its own unattached leftover: the leftover segment attached by
// another process, a queue of the same key with another id. Once they
// are gone the restore works.
func TestRestoreSysVInTheWay(t *testing.T) {
	p := startSysV(t, "check")
	p.Check(t)
	dir := filepath.Join(t.TempDir(), "img")
	_, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: dir})
	require.NoError(t, err)
	p.Kill()
	reapTree(t, dir)
	shma, keya := p.IntInfo(t, "shma"), p.HexInfo(t, "keya")
	semValues := func() []uint16 {
		o := ipc.Object{Kind: ipc.Sem, Nsems: 3}
		o.ID = p.IntInfo(t, "sem")
		s, err := ipc.DumpSem(&o)
		require.NoError(t, err)
		return s.Values
	}
	// The child's SEM_UNDO was undone when it was killed: 5 0 42, not the
	// image's 5 1 42.
	require.Equal(t, []uint16{5, 0, 42}, semValues())

	mem, err := unix.SysvShmAttach(shma, 0, unix.SHM_RDONLY)
	require.NoError(t, err)
	_, err = restore.Run(context.Background(), restore.Options{Dir: dir})
	require.ErrorContains(t, err, fmt.Sprintf("SysV shared memory segment (key %#08x, shmid %d) of the image cannot be recreated", keya, shma))
	require.ErrorContains(t, err, "1 process(es) attach it")
	require.NoError(t, unix.SysvShmDetach(mem))
	require.Equal(t, []uint16{5, 0, 42}, semValues(), "nothing was replaced")

	keyq, msq := int32(p.HexInfo(t, "keyq")), p.IntInfo(t, "msg")
	require.NoError(t, ipc.Remove(ipc.Msg, msq))
	other := msgget(t, keyq)
	require.NotEqual(t, msq, other)
	_, err = restore.Run(context.Background(), restore.Options{Dir: dir})
	require.ErrorContains(t, err, fmt.Sprintf("SysV message queue (key %#08x, msqid %d) of the image cannot be recreated: another object, id %d, holds key", uint32(keyq), msq, other))
	require.Equal(t, []uint16{5, 0, 42}, semValues(), "nothing was replaced")
	require.ErrorIs(t, unix.Kill(p.Pid, 0), unix.ESRCH, "no process was created")

	require.NoError(t, ipc.Remove(ipc.Msg, other))
	res, err := restore.Run(context.Background(), restore.Options{Dir: dir})
	require.NoError(t, err)
	q := testutil.Adopt(t, res.Pid, p.Dir)
	q.Info = p.Info
	require.Equal(t, []uint16{5, 1, 42}, semValues(), "the leftover set was replaced by the image's")
	q.Check(t)
	require.Equal(t, 0, q.Stop(t))
}

// TestDumpSysVNamed: an object the tree neither attaches nor used last is
// dumped when named (--ipc-id), and a bad name is refused.
func TestDumpSysVNamed(t *testing.T) {
	p := startSysV(t, "check")
	other := msgget(t, 0)
	ids, err := dump.ParseIPCIDs(fmt.Sprintf("msg:%d", other))
	require.NoError(t, err)
	_, err = dump.ParseIPCIDs("queue:3")
	require.ErrorContains(t, err, "want shm:ID, sem:ID or msg:ID")
	dir := filepath.Join(t.TempDir(), "img")
	_, err = dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: dir, LeaveRunning: true, IPCIDs: ids})
	require.NoError(t, err)
	ck, err := image.Load(dir)
	require.NoError(t, err)
	require.Len(t, ck.IPC.Msg, 2)
	require.Contains(t, []int{ck.IPC.Msg[0].ID, ck.IPC.Msg[1].ID}, other)
	p.Check(t)
	require.Equal(t, 0, p.Stop(t))
}
