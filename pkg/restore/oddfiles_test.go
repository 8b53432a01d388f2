package restore_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/dump"
	"github.com/cr-tools/cr/pkg/files"
	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/restore"
	"github.com/stretchr/testify/require"
)

// oddCase starts the oddfiles fixture in mode (with more arguments).
func oddCase(t *testing.T, mode string, args ...string) *testutil.Proc {
	t.Helper()
	testutil.RequireRoot(t)
	return testutil.Start(t, testutil.BuildC(t, "oddfiles"), append([]string{mode}, args...)...)
}

// fileOfType returns the image's descriptions of type typ.
func fileOfType(ck *image.Checkpoint, typ string) []image.File {
	var out []image.File
	for _, f := range ck.Files {
		if f.Type == typ {
			out = append(out, f)
		}
	}
	return out
}

// TestSignalfdPending: a signalfd keeps its mask and O_NONBLOCK, and the
// signal pending at the dump is still pending after restore, read through
// the signalfd (checked before the dump too: the dump does not take it).
func TestSignalfdPending(t *testing.T) {
	p := oddCase(t, "signalfd")
	p.Check(t)
	q, ck := dumpAndRestore(t, p)
	sf := fileOfType(ck, image.FileSignalfd)
	require.Len(t, sf, 1)
	require.NotZero(t, sf[0].Signalfd.Mask&(1<<(28-1)), "SIGWINCH (28) in the mask")
	q.Check(t)
	q.Check(t)
	require.Equal(t, 0, q.Stop(t))
}

// TestPidfdChildExit: a pidfd of a child of the tree points at the restored
// child; when the child exits after restore, poll reports it and
// waitid(P_PIDFD) gives its status. A PIDFD_THREAD pidfd of the process
// itself keeps its flag.
func TestPidfdChildExit(t *testing.T) {
	p := oddCase(t, "pidfd")
	p.Check(t)
	q, ck := dumpAndRestore(t, p)
	pf := fileOfType(ck, image.FilePidfd)
	require.Len(t, pf, 2)
	q.Check(t)
	require.NoError(t, os.WriteFile(filepath.Join(q.Dir, "childexit"), nil, 0o644))
	q.Check(t)
	require.Equal(t, 0, q.Stop(t))
}

// TestInotifyWatches: every watch comes back with its watch descriptor
// number (a removed one stays free) and mask; the event queued at the dump
// is counted in the image, not saved.
func TestInotifyWatches(t *testing.T) {
	p := oddCase(t, "inotify")
	q, ck := dumpAndRestore(t, p)
	in := fileOfType(ck, image.FileInotify)
	require.Len(t, in, 1)
	var wds []int
	for _, w := range in[0].Inotify.Watches {
		wds = append(wds, w.Wd)
	}
	require.Equal(t, []int{1, 2, 4}, wds)
	require.Equal(t, filepath.Join(p.Dir, "c"), in[0].Inotify.Watches[2].Path)
	require.Positive(t, in[0].Inotify.QueuedBytes, "the queued IN_CREATE event is counted")
	require.Contains(t, files.Describe(&in[0]), "bytes of events queued at the dump were not saved")
	q.Check(t)
	q.Check(t)
	require.Equal(t, 0, q.Stop(t))
}

// TestFanotifyMark: a fanotify group with an inode mark reports a write to
// the marked file after restore.
func TestFanotifyMark(t *testing.T) {
	p := oddCase(t, "fanotify")
	p.Check(t)
	q, ck := dumpAndRestore(t, p)
	fa := fileOfType(ck, image.FileFanotify)
	require.Len(t, fa, 1)
	require.Equal(t, []image.FanotifyMark{{Kind: "inode", Path: filepath.Join(p.Dir, "a"), Dev: fa[0].Fanotify.Marks[0].Dev,
		Ino: fa[0].Fanotify.Marks[0].Ino, Mask: 2}}, fa[0].Fanotify.Marks)
	q.Check(t)
	require.Equal(t, 0, q.Stop(t))
}

// TestTmpfile: an O_TMPFILE file comes back unlinked in the same directory
// with its mode, size, contents, hole and offset.
func TestTmpfile(t *testing.T) {
	p := oddCase(t, "tmpfile")
	p.Check(t)
	q, ck := dumpAndRestore(t, p)
	require.Len(t, fileOfType(ck, image.FileGhost), 1)
	require.Len(t, ck.Shmem, 1)
	require.Len(t, ck.Shmem[0].Runs, 2, "two runs of data, the hole left out")
	q.Check(t)
	require.Equal(t, 0, q.Stop(t))
}

// TestDeletedFileAndLibrary: a deleted data file open twice and mapped
// MAP_SHARED, and a library loaded with dlopen and deleted: one saved copy
// each, the mapping and the fds share the restored file, and the library's
// code runs.
func TestDeletedFileAndLibrary(t *testing.T) {
	testutil.RequireRoot(t)
	lib := filepath.Join(t.TempDir(), "libanswer.so")
	src := filepath.Join(t.TempDir(), "answer.c")
	require.NoError(t, os.WriteFile(src, []byte("int answer(int x) { return x + 42; }\n"), 0o644))
	out, err := exec.Command("gcc", "-shared", "-fPIC", "-o", lib, src).CombinedOutput()
	require.NoError(t, err, "%s", out)
	p := oddCase(t, "deleted", lib)
	p.Check(t)
	q, ck := dumpAndRestore(t, p)
	require.Len(t, fileOfType(ck, image.FileGhost), 2, "two descriptions")
	require.Len(t, ck.Shmem, 2, "one copy of the data file, one of the library")
	var paths []string
	for _, sh := range ck.Shmem {
		require.Equal(t, image.ShmemGhost, sh.Kind)
		paths = append(paths, sh.Path)
	}
	require.ElementsMatch(t, []string{filepath.Join(p.Dir, "data"), lib}, paths)
	q.Check(t)
	q.Check(t)
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", q.Pid))
	require.NoError(t, err)
	require.Contains(t, string(maps), " (deleted)")
	require.Equal(t, 0, q.Stop(t))
}

// TestRotatedLog: a log file renamed while open (rotation) and a new one
// are reopened as they are; a deleted log keeps its contents and takes
// new lines.
func TestRotatedLog(t *testing.T) {
	p := oddCase(t, "rotated")
	p.Check(t)
	q, _ := dumpAndRestore(t, p)
	q.Check(t)
	old, err := os.ReadFile(filepath.Join(q.Dir, "app.log.1"))
	require.NoError(t, err)
	require.Equal(t, "first\ncheck 1\ncheck 2\n", string(old))
	cur, err := os.ReadFile(filepath.Join(q.Dir, "app.log"))
	require.NoError(t, err)
	require.Equal(t, "check 1\ncheck 2\n", string(cur))
	require.NoFileExists(t, filepath.Join(q.Dir, "gone"))
	require.Equal(t, 0, q.Stop(t))
}

// TestDeletedExecutable: a process whose executable was deleted is dumped
// and restored; its exe link names the deleted copy.
func TestDeletedExecutable(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.BuildC(t, "oddfiles")
	cp := filepath.Join(t.TempDir(), "oddfiles-copy")
	data, err := os.ReadFile(bin)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(cp, data, 0o755))
	p := testutil.Start(t, cp, "exe")
	require.NoError(t, os.Remove(cp))
	p.Check(t)
	q, ck := dumpAndRestore(t, p)
	require.NotZero(t, ck.Processes[0].MM.ExeGhost)
	q.Check(t)
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", q.Pid))
	require.NoError(t, err)
	require.True(t, strings.HasSuffix(exe, " (deleted)"), "exe %s", exe)
	require.Equal(t, 0, q.Stop(t))
}

// TestOddRefusals: kinds cr cannot save are refused, each named; so are a
// pidfd of a process outside the tree and a deleted file above the ghost
// limit (naming its size and the option).
func TestOddRefusals(t *testing.T) {
	p := oddCase(t, "refuse")
	want := []string{
		fmt.Sprintf("pid %d: fd %d is a pidfd of pid 1, a process outside the dumped tree", p.Pid, p.IntInfo(t, "pidfd1")),
		fmt.Sprintf("fd %d is the deleted file %s of 2097152 bytes, larger than the ghost file limit of 1048576 bytes: dump with --ghost-limit 2M to save it", p.IntInfo(t, "big"), filepath.Join(p.Dir, "big")),
	}
	for key, what := range map[string]string{"uffd": "a userfaultfd", "uring": "an io_uring instance", "perf": "a perf_event", "bpfmap": "a BPF map", "secret": "a memfd_secret area"} {
		if _, ok := p.Info[key]; !ok {
			t.Logf("the kernel gave no %s here", what)
			continue
		}
		want = append(want, fmt.Sprintf("fd %d is %s: not supported yet", p.IntInfo(t, key), what))
	}
	refused(t, p, want...)
	// A larger limit takes the big file.
	dir := filepath.Join(t.TempDir(), "img")
	_, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: dir, GhostLimit: 4 << 20})
	require.Error(t, err)
	require.NotContains(t, err.Error(), "ghost file limit")
}

// TestTailFollow: tail -f (inotify) on a growing file: after restore, a
// line appended while it was checkpointed and one appended after are both
// printed.
func TestTailFollow(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := exec.LookPath("tail"); err != nil {
		t.Skip("no tail")
	}
	dir := t.TempDir()
	logf := filepath.Join(dir, "grow")
	require.NoError(t, os.WriteFile(logf, []byte("one\n"), 0o644))
	p := startShell(t, dir, "exec tail -f grow > out 2> err")
	out := filepath.Join(dir, "out")
	waitFor := func(want string) {
		deadline := time.Now().Add(5 * time.Second)
		for {
			b, _ := os.ReadFile(out)
			if string(b) == want {
				return
			}
			errb, _ := os.ReadFile(filepath.Join(dir, "err"))
			require.True(t, time.Now().Before(deadline), "tail printed %q, want %q (stderr %q)", b, want, errb)
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor("one\n")
	// tail sets up its inotify watch once it has printed the end.
	deadline := time.Now().Add(5 * time.Second)
	for !hasFd(p.Pid, "anon_inode:inotify") {
		require.True(t, time.Now().Before(deadline), "tail never made an inotify instance")
		time.Sleep(10 * time.Millisecond)
	}
	appendLine := func(s string) {
		f, err := os.OpenFile(logf, os.O_WRONLY|os.O_APPEND, 0)
		require.NoError(t, err)
		_, err = f.WriteString(s)
		require.NoError(t, err)
		require.NoError(t, f.Close())
	}
	appendLine("two\n")
	waitFor("one\ntwo\n")

	img := filepath.Join(t.TempDir(), "img")
	_, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: img})
	require.NoError(t, err)
	p.Kill()
	appendLine("three\n") // while checkpointed
	reapTree(t, img)
	res, err := restore.Run(context.Background(), restore.Options{Dir: img})
	require.NoError(t, err)
	q := testutil.Adopt(t, res.Pid, dir)
	defer killGroup(q)
	appendLine("four\n")
	waitFor("one\ntwo\nthree\nfour\n")
	require.True(t, q.Alive())
}

// hasFd tells whether pid has an fd whose link reads target.
func hasFd(pid int, target string) bool {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, e := range ents {
		if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); l == target {
			return true
		}
	}
	return false
}
