package image_test

import (
	"path/filepath"
	"testing"

	"github.com/cr-tools/cr/pkg/image"
	"github.com/stretchr/testify/require"
)

// sysvCheckpoint: one process attaching a 2-page segment (split in two
// VMAs by mprotect), with a semaphore set and a queue.
func sysvCheckpoint(vmas []image.VMA) *image.Checkpoint {
	return &image.Checkpoint{
		Inventory: image.Inventory{FormatMajor: 1, Pids: []int{1234}, RootPid: 1234},
		Processes: []*image.Process{{
			Task: image.Task{Pid: 1234}, Threads: []image.Thread{{Tid: 1234, XState: &image.XState{Legacy: make([]byte, 512)}}},
			VMAs: vmas,
		}},
		IPC: &image.SysVIPC{
			Shm: []image.SysVShm{{IPCPerm: image.IPCPerm{Key: 0x1234, ID: 0, Mode: 0o640, UID: 7}, Size: 5000, Removed: true}},
			Sem: []image.SysVSem{{IPCPerm: image.IPCPerm{Key: 0x1234, ID: 3}, Values: []uint16{1, 2}}},
			Msg: []image.SysVMsg{{IPCPerm: image.IPCPerm{ID: 9}, QBytes: 100, Messages: []image.SysVMessage{{Type: 2, Data: []byte("hi")}}}},
		},
	}
}

func shmVMA(start, end, pgoff uint64, id int) image.VMA {
	return image.VMA{Start: start, End: end, Pgoff: pgoff, Prot: "rw", Flags: []string{image.VMAShared}, SysVShmid: &id}
}

// TestSysVRoundTrip: the SysV records and the attachment field read back
// as written; an attachment that is not whole, or names no segment, is
// refused by the writer.
func TestSysVRoundTrip(t *testing.T) {
	ck := sysvCheckpoint([]image.VMA{shmVMA(0x10000, 0x11000, 0, 0), shmVMA(0x11000, 0x12000, 0x1000, 0)})
	dir := filepath.Join(t.TempDir(), "img")
	w, err := image.Create(dir, false)
	require.NoError(t, err)
	_, err = w.Pages(1234)
	require.NoError(t, err)
	pw, err := w.PagesNamed(image.SysVShmPagesFile)
	require.NoError(t, err)
	_ = pw
	require.NoError(t, w.WriteMeta(ck))
	require.NoError(t, w.Commit())
	got, err := image.Load(dir)
	require.NoError(t, err)
	require.Equal(t, ck.IPC, got.IPC)
	require.Equal(t, 0, *got.Processes[0].VMAs[1].SysVShmid)
	require.NoError(t, image.VerifySysVShm(dir, got.IPC))

	for name, vmas := range map[string][]image.VMA{
		"partial":   {shmVMA(0x10000, 0x11000, 0, 0)},
		"offset":    {shmVMA(0x11000, 0x12000, 0x1000, 0)},
		"unknown":   {shmVMA(0x10000, 0x12000, 0, 5)},
		"too long":  {shmVMA(0x10000, 0x13000, 0, 0)},
		"two halfs": {shmVMA(0x10000, 0x11000, 0, 0), shmVMA(0x12000, 0x13000, 0x1000, 0)},
	} {
		w, err := image.Create(filepath.Join(t.TempDir(), "img"), false)
		require.NoError(t, err)
		_, err = w.Pages(1234)
		require.NoError(t, err)
		require.Error(t, w.WriteMeta(sysvCheckpoint(vmas)), name)
		w.Abort()
	}
}
