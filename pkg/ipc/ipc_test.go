package ipc_test

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/ipc"
	"github.com/stretchr/testify/require"
)

// freeID finds an id of kind that no object holds, with a free slot.
func freeID(t *testing.T, kind string, from int) int {
	objs, err := ipc.List(kind)
	require.NoError(t, err)
	for id := from; ; id++ {
		free := true
		for _, o := range objs {
			free = free && o.ID%32768 != id%32768
		}
		if free {
			return id
		}
	}
}

func msgmax(t *testing.T) int {
	b, err := os.ReadFile("/proc/sys/kernel/msgmax")
	require.NoError(t, err)
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	require.NoError(t, err)
	return n
}

// TestCreateUndo: when one object cannot be made (a message longer than
// msgmax), the objects made before it are removed again, and the ids are
// the image's.
func TestCreateUndo(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	key := int32(0x63760000 | os.Getpid()&0xffff)
	sem := image.SysVSem{IPCPerm: image.IPCPerm{Key: key, ID: freeID(t, ipc.Sem, 32768*3+100), Mode: 0o600, CUID: 4321, CGID: 5432}, Values: []uint16{7, 8}}
	msg := image.SysVMsg{IPCPerm: image.IPCPerm{Key: key, ID: freeID(t, ipc.Msg, 32768*3+100), Mode: 0o600}, QBytes: 16384,
		Messages: []image.SysVMessage{{Type: 1, Data: make([]byte, msgmax(t)+1)}}}
	t.Cleanup(func() {
		ipc.Remove(ipc.Sem, sem.ID)
		ipc.Remove(ipc.Msg, msg.ID)
	})
	_, err := ipc.Create(t.TempDir(), &image.SysVIPC{Sem: []image.SysVSem{sem}, Msg: []image.SysVMsg{msg}}, nil)
	require.ErrorContains(t, err, "queue message 0 (type 1, ")
	for _, kind := range []string{ipc.Sem, ipc.Msg} {
		objs, err := ipc.List(kind)
		require.NoError(t, err)
		for _, o := range objs {
			require.NotEqual(t, key, o.Key, "a %s object made before the failure is left", kind)
		}
	}
	// Without the queue it works: the set has its id, creator and values.
	c, err := ipc.Create(t.TempDir(), &image.SysVIPC{Sem: []image.SysVSem{sem}}, nil)
	require.NoError(t, err)
	objs, err := ipc.List(ipc.Sem)
	require.NoError(t, err)
	found := false
	for _, o := range objs {
		if o.Key == key {
			found = true
			require.Equal(t, sem.ID, o.ID)
			require.Equal(t, uint32(4321), o.CUID)
			require.Equal(t, uint32(5432), o.CGID)
			s, err := ipc.DumpSem(&o)
			require.NoError(t, err)
			require.Equal(t, sem.Values, s.Values)
		}
	}
	require.True(t, found)
	c.Undo()
}
