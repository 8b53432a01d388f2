package restore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/dump"
	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/restore"
	"github.com/stretchr/testify/require"
)

// rewrite writes a copy of the image in src, changed by mutate, with
// valid checksums: what a buggy or hostile writer could produce.
func rewrite(t *testing.T, src string, mutate func(c *image.Checkpoint)) string {
	c, err := image.Load(src)
	require.NoError(t, err)
	orig := map[*image.Process]int{} // pages stay with their process if mutate changes its pid
	for _, p := range c.Processes {
		orig[p] = p.Task.Pid
	}
	mutate(c)
	dst := filepath.Join(t.TempDir(), "img")
	w, err := image.Create(dst, false)
	require.NoError(t, err)
	for _, p := range c.Processes {
		if p.Task.Zombie {
			continue
		}
		from, ok := orig[p]
		if !ok {
			from = p.Task.Pid
		}
		data, err := os.ReadFile(filepath.Join(src, image.PagesFile(from)))
		if err != nil {
			data = make([]byte, image.PageSize)
		}
		pw, err := w.Pages(p.Task.Pid)
		require.NoError(t, err)
		require.NoError(t, pw.Write(data[image.PageSize:]))
	}
	require.NoError(t, w.WriteMeta(c))
	require.NoError(t, w.Commit())
	return dst
}

// TestRestoreRejectsInconsistentImages: images with valid checksums but
// inconsistent contents are refused with an error, never a panic, a hang or
// a half-built process.
func TestRestoreRejectsInconsistentImages(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "pipe"))
	src := filepath.Join(t.TempDir(), "img")
	_, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: src})
	require.NoError(t, err)
	p.Kill()
	pid := p.Pid
	proc := func(c *image.Checkpoint) *image.Process { return c.Processes[0] }
	cases := map[string]func(c *image.Checkpoint){
		"pipe without its record": func(c *image.Checkpoint) {
			for i := range c.Files {
				if c.Files[i].Type == image.FilePipe {
					c.Files[i].Pipe = nil
				}
			}
		},
		"unknown file type": func(c *image.Checkpoint) { c.Files[0].Type = "teleporter" },
		"unknown special area": func(c *image.Checkpoint) {
			for i := range proc(c).VMAs {
				if proc(c).VMAs[i].File != nil {
					proc(c).VMAs[i].Special = "bogus"
					break
				}
			}
		},
		"short pending signal":            func(c *image.Checkpoint) { proc(c).Threads[0].Pending = [][]byte{{1}} },
		"CPU features this machine lacks": func(c *image.Checkpoint) { c.Inventory.CPU.XFeatures |= 1 << 62 },
		"XSAVE legacy region cut short": func(c *image.Checkpoint) {
			proc(c).Threads[0].XState.Legacy = proc(c).Threads[0].XState.Legacy[:500]
		},
		"root is its own parent, with pages in its parent": func(c *image.Checkpoint) {
			proc(c).Task.Ppid = pid
			// An in_parent run in a VMA without saved pages (the stored runs
			// stay as they are: the writer refuses a page map that does not
			// match the pages file).
			pm := proc(c).PageMap
			for _, v := range proc(c).VMAs {
				i := sort.Search(len(pm), func(i int) bool { return pm[i].Addr >= v.Start })
				if i == len(pm) || pm[i].Addr >= v.End {
					pm = append(pm[:i], append([]image.PageRun{{Addr: v.Start, Pages: 1, InParent: true}}, pm[i:]...)...)
					break
				}
			}
			proc(c).PageMap = pm
		},
		"a process that is its own parent": func(c *image.Checkpoint) {
			other := *proc(c)
			other.Task.Pid, other.Task.Ppid = 30001, 30001
			other.Task.Zombie, other.Threads, other.PageMap = true, nil, nil
			c.Processes = append(c.Processes, &other)
			c.Inventory.Pids = append(c.Inventory.Pids, 30001)
		},
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			dir := rewrite(t, src, mutate)
			done := make(chan error, 1)
			go func() {
				_, err := restore.Run(context.Background(), restore.Options{Dir: dir})
				done <- err
			}()
			select {
			case err := <-done:
				require.Error(t, err)
				t.Log(err)
			case <-time.After(20 * time.Second):
				t.Fatal("restore hangs")
			}
			require.NoDirExists(t, fmt.Sprintf("/proc/%d", pid), "nothing is left running")
		})
	}
	// The unchanged image still restores.
	res, err := restore.Run(context.Background(), restore.Options{Dir: rewrite(t, src, func(*image.Checkpoint) {})})
	require.NoError(t, err)
	testutil.Adopt(t, res.Pid, p.Dir).Check(t)
}

// TestRestoreTreeFailsCleanly: a failure in the middle of rebuilding a tree
// (a pipe whose saved bytes no longer fit) kills every process already
// created: nothing half-built is left.
func TestRestoreTreeFailsCleanly(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "family"))
	src := filepath.Join(t.TempDir(), "img")
	_, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: src})
	require.NoError(t, err)
	p.Kill()
	reapTree(t, src)
	dir := rewrite(t, src, func(c *image.Checkpoint) {
		for i := range c.Files {
			if f := &c.Files[i]; f.Pipe != nil && f.Flags&0o3 == 0 { // the read end
				f.Pipe.Size = 4096
				f.Pipe.Data = make([]byte, 1<<20)
			}
		}
	})
	ck, err := image.Load(dir)
	require.NoError(t, err)
	_, err = restore.Run(context.Background(), restore.Options{Dir: dir})
	require.Error(t, err)
	require.Contains(t, err.Error(), "saved bytes")
	for _, pid := range ck.Inventory.Pids {
		testutil.Reap(pid, time.Second)
		require.NoDirExists(t, fmt.Sprintf("/proc/%d", pid), "pid %d is left after a failed restore", pid)
	}
}
