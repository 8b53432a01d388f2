package dump_test

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/dump"
	"github.com/cr-tools/cr/pkg/image"
	"github.com/stretchr/testify/require"
)

func pfns(t *testing.T, pid int, addr uint64, pages int) []uint64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	require.NoError(t, err)
	defer f.Close()
	buf := make([]byte, pages*8)
	_, err = f.ReadAt(buf, int64(addr/4096*8))
	require.NoError(t, err)
	out := make([]uint64, pages)
	for i := range out {
		out[i] = binary.LittleEndian.Uint64(buf[i*8:]) & (1<<55 - 1)
	}
	return out
}

// TestDumpTreeKeepsCopyOnWrite: dumping a parent and child that share 16 MiB
// copy-on-write stores those pages once, and does not unshare them in the
// live processes (reading them must not pin them).
func TestDumpTreeKeepsCopyOnWrite(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "shm"))
	child := p.IntInfo(t, "c")
	priv := p.HexInfo(t, "priv")
	const pages = 4096
	before := pfns(t, p.Pid, priv, pages)
	require.Equal(t, before, pfns(t, child, priv, pages), "shared before the dump")

	dir := filepath.Join(t.TempDir(), "img")
	_, err := dump.Run(dump.Options{Pid: p.Pid, Dir: dir, LeaveRunning: true})
	require.NoError(t, err)
	require.Equal(t, before, pfns(t, p.Pid, priv, pages), "the parent's pages were unshared by the dump")
	require.Equal(t, before, pfns(t, child, priv, pages), "the child's pages were unshared by the dump")

	ck, err := image.Load(dir)
	require.NoError(t, err)
	require.Len(t, ck.Processes, 2)
	var inParent uint64
	for _, r := range ck.Processes[1].PageMap {
		if r.InParent {
			inParent += r.Pages
		}
	}
	require.GreaterOrEqual(t, inParent, uint64(pages), "the child's inherited pages point to the parent's image")
	st, err := os.Stat(filepath.Join(dir, image.PagesFile(child)))
	require.NoError(t, err)
	require.Less(t, st.Size(), int64(1<<20))
	p.Check(t)
}

// TestDumpStoppedChildStaysStopped: a stopped child of a dumped tree is
// stopped again after a dump with LeaveRunning.
func TestDumpStoppedChildStaysStopped(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "family"))
	s := p.IntInfo(t, "stopped")
	state := func() string {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s))
		require.NoError(t, err)
		st := string(b)
		return strings.Fields(st[strings.LastIndexByte(st, ')')+2:])[0]
	}
	require.Equal(t, "T", state())
	dir := filepath.Join(t.TempDir(), "img")
	_, err := dump.Run(dump.Options{Pid: p.Pid, Dir: dir, LeaveRunning: true})
	require.NoError(t, err)
	ck, err := image.Load(dir)
	require.NoError(t, err)
	for _, pr := range ck.Processes {
		if pr.Task.Pid == s {
			require.True(t, pr.Task.Stopped, "recorded as stopped")
		}
	}
	time.Sleep(20 * time.Millisecond)
	require.Equal(t, "T", state(), "still stopped after the dump")
	p.Check(t)
}
