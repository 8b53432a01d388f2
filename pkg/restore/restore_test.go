package restore_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/dump"
	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/restore"
	"github.com/stretchr/testify/require"
)

// outside is what we compare from outside the process, before and after.
type outside struct {
	maps    []string
	fds     map[string]string
	status  map[string]string
	cmdline string
	exe     string
	comm    string
	timers  string
	pers    string
}

var statusKeys = []string{"Umask", "SigBlk", "SigIgn", "SigCgt", "SigPnd", "ShdPnd", "Uid", "Gid", "Groups", "NSsid", "NSpgid", "Tgid",
	"NoNewPrivs", "Seccomp", "Seccomp_filters", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}

func look(t *testing.T, pid int) outside {
	t.Helper()
	o := outside{fds: map[string]string{}, status: map[string]string{}}
	o.maps = mergedMaps(t, pid)
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	require.NoError(t, err)
	pipes := map[string]string{} // pipe inode -> its order of appearance
	for _, e := range ents {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
		require.NoError(t, err)
		if strings.HasPrefix(l, "pipe:") || strings.HasPrefix(l, "socket:") { // made anew: a new inode
			if pipes[l] == "" {
				pipes[l] = fmt.Sprintf("%s#%d", l[:strings.IndexByte(l, ':')], len(pipes))
			}
			l = pipes[l]
		}
		info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, e.Name()))
		require.NoError(t, err)
		var pos, flags string
		for _, line := range strings.Split(string(info), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && (k == "pos" || k == "flags") {
				if k == "pos" {
					pos = strings.TrimSpace(v)
				} else {
					flags = strings.TrimSpace(v)
				}
			}
		}
		if strings.HasSuffix(l, "/log") || strings.HasSuffix(l, "/shared.txt") {
			pos = "(moving)" // written by the fixture all the time
		}
		o.fds[e.Name()] = fmt.Sprintf("%s pos=%s flags=%s", l, pos, flags)
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	for _, line := range strings.Split(string(st), "\n") {
		k, v, _ := strings.Cut(line, ":")
		for _, want := range statusKeys {
			if k == want {
				o.status[k] = strings.TrimSpace(v)
			}
		}
	}
	// A pending signal that is not blocked is only in flight (a timer tick):
	// compare what is pending and blocked.
	blk, _ := strconv.ParseUint(o.status["SigBlk"], 16, 64)
	for _, k := range []string{"SigPnd", "ShdPnd"} {
		v, _ := strconv.ParseUint(o.status[k], 16, 64)
		o.status[k] = fmt.Sprintf("%016x", v&blk)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	require.NoError(t, err)
	o.cmdline = string(b)
	o.exe, err = os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	require.NoError(t, err)
	c, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	require.NoError(t, err)
	o.comm = string(c)
	c, err = os.ReadFile(fmt.Sprintf("/proc/%d/timers", pid))
	require.NoError(t, err)
	o.timers = string(c)
	c, err = os.ReadFile(fmt.Sprintf("/proc/%d/personality", pid))
	require.NoError(t, err)
	o.pers = string(c)
	return o
}

// mergedMaps reads /proc/PID/maps and merges adjacent entries that the
// kernel may or may not merge (same perms and name, contiguous offsets).
func mergedMaps(t *testing.T, pid int) []string {
	f, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	require.NoError(t, err)
	defer f.Close()
	type ent struct {
		start, end, off uint64
		perms, name     string
	}
	var out []ent
	s := bufio.NewScanner(f)
	for s.Scan() {
		var e ent
		var dev string
		var ino uint64
		fields := strings.Fields(s.Text())
		fmt.Sscanf(s.Text(), "%x-%x %s %x %s %d", &e.start, &e.end, &e.perms, &e.off, &dev, &ino)
		if len(fields) > 5 {
			e.name = strings.Join(fields[5:], " ")
		}
		if e.name == "[vsyscall]" {
			continue
		}
		if n := len(out); n > 0 {
			p := &out[n-1]
			if p.end == e.start && p.perms == e.perms && p.name == e.name &&
				(e.name == "" || e.name == "[heap]" || e.name == "[stack]" || p.off+(p.end-p.start) == e.off) {
				p.end = e.end
				continue
			}
		}
		out = append(out, e)
	}
	var lines []string
	for _, e := range out {
		lines = append(lines, fmt.Sprintf("%x-%x %s %s", e.start, e.end, e.perms, e.name))
	}
	return lines
}

// roundTrip checks the fixture, dumps it (killing it), restores it, and
// checks it again from inside and outside.
func roundTrip(t *testing.T, bin string, args ...string) (*testutil.Proc, string) {
	t.Helper()
	testutil.RequireRoot(t)
	p := testutil.Start(t, bin, args...)
	before := p.Check(t)
	o1 := look(t, p.Pid)
	dir := filepath.Join(t.TempDir(), "img")
	_, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: dir})
	require.NoError(t, err)
	p.Kill() // dumped and killed: make sure it is reaped
	reapTree(t, dir)

	res, err := restore.Run(context.Background(), restore.Options{Dir: dir})
	require.NoError(t, err)
	require.Equal(t, p.Pid, res.Pid, "restored with the original pid")
	q := testutil.Adopt(t, res.Pid, p.Dir)
	q.Info = p.Info
	o2 := look(t, q.Pid)
	after := q.Check(t)
	require.Greater(t, after, before, "the counter continues instead of restarting")
	require.Equal(t, o1.maps, o2.maps, "memory map")
	require.Equal(t, o1.fds, o2.fds, "fd table")
	require.Equal(t, o1.status, o2.status, "status")
	require.Equal(t, o1.cmdline, o2.cmdline, "cmdline")
	require.Equal(t, o1.exe, o2.exe, "exe link")
	require.Equal(t, o1.comm, o2.comm, "comm")
	require.Equal(t, o1.timers, o2.timers, "POSIX timers")
	require.Equal(t, o1.pers, o2.pers, "personality")
	q.Check(t)
	return q, dir
}

func TestRoundTripFixtures(t *testing.T) {
	for _, name := range []string{"anon", "sparse", "filemap", "files", "signals", "counter", "sigstate", "creds", "strict", "pipe", "fdkinds"} {
		t.Run(name, func(t *testing.T) {
			q, _ := roundTrip(t, testutil.BuildC(t, name))
			require.Equal(t, 0, q.Stop(t))
		})
	}
}

// TestRoundTripManyFds: hundreds of descriptors of one file, each its own
// open file description (distinct offsets) or all one (dups): the dump's
// grouping of descriptions (kcmp order, parallel /proc reads) keeps exactly
// the sharing there was.
func TestRoundTripManyFds(t *testing.T) {
	bin := testutil.BuildC(t, "onefile")
	for _, mode := range []string{"distinct", "shared"} {
		t.Run(mode, func(t *testing.T) {
			q, _ := roundTrip(t, bin, "600", mode)
			require.Equal(t, 0, q.Stop(t))
		})
	}
}

func TestRoundTripRegisters(t *testing.T) {
	testutil.RequireAVX512(t)
	bin := testutil.BuildC(t, "spin_avx", "-mavx512f", "-mavx512bw", "-mavx2")
	q, _ := roundTrip(t, bin)
	for i := 0; i < 3; i++ {
		q.Check(t)
	}
	require.Equal(t, 0, q.Stop(t))
}

// TestSparseStaysSparse: untouched pages are not populated by the restore.
func TestSparseStaysSparse(t *testing.T) {
	q, _ := roundTrip(t, testutil.BuildC(t, "sparse"))
	start := q.HexInfo(t, "sparse")
	rss := smapsField(t, q.Pid, start, "Rss")
	require.Less(t, rss, uint64(1024), "Rss of the 64 MiB sparse mapping after restore, in kB")
}

func smapsField(t *testing.T, pid int, start uint64, field string) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	require.NoError(t, err)
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		var s, e uint64
		if n, _ := fmt.Sscanf(line, "%x-%x", &s, &e); n == 2 && strings.Contains(line, " ") && !strings.Contains(line, ":") || (n == 2 && strings.Count(line, ":") == 1 && strings.Index(line, "-") < strings.Index(line, " ")) {
			in = s == start
			continue
		}
		if in && strings.HasPrefix(line, field+":") {
			var v uint64
			fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(line, field+":")), "%d", &v)
			return v
		}
	}
	t.Fatalf("no %s for mapping %#x", field, start)
	return 0
}

// TestSeed is the scenario of the original checkpoint/restart patches.
func TestSeed(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.BuildC(t, "seed")
	p := testutil.Start(t, bin)
	file := filepath.Join(p.Dir, "hello.txt")
	dir := filepath.Join(t.TempDir(), "img")
	_, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: dir})
	require.NoError(t, err)
	p.Kill()
	require.NoError(t, os.WriteFile(file, []byte("hello, world!\nxxxx\n"), 0o644))

	res, err := restore.Run(context.Background(), restore.Options{Dir: dir})
	require.NoError(t, err)
	q := testutil.Adopt(t, res.Pid, p.Dir)
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", q.Pid))
	want := filepath.Base(bin)
	if len(want) > 15 {
		want = want[:15]
	}
	require.Equal(t, want+"\n", string(comm))
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", q.Pid))
	require.Equal(t, bin+"\x00"+p.Dir+"\x00", string(cmdline))
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", q.Pid))
	require.Equal(t, bin, exe)

	require.NoError(t, syscallKill(q.Pid, "USR1"))
	require.Equal(t, 0, q.Wait(t, 10*time.Second).ExitStatus())
	got, err := os.ReadFile(file)
	require.NoError(t, err)
	require.Equal(t, "hello, world!\nworld, hello!\n", string(got))
}

func TestRestoreTwice(t *testing.T) {
	q, dir := roundTrip(t, testutil.BuildC(t, "counter"))
	require.Equal(t, 0, q.Stop(t))
	res, err := restore.Run(context.Background(), restore.Options{Dir: dir})
	require.NoError(t, err)
	q2 := testutil.Adopt(t, res.Pid, q.Dir)
	q2.Check(t)
	require.Equal(t, 0, q2.Stop(t))
}

func TestRestorePidInUse(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "counter"))
	dir := filepath.Join(t.TempDir(), "img")
	_, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: dir, LeaveRunning: true})
	require.NoError(t, err)
	_, err = restore.Run(context.Background(), restore.Options{Dir: dir})
	var e *restore.PidInUseError
	require.ErrorAs(t, err, &e)
	require.Contains(t, err.Error(), fmt.Sprintf("pid %d is in use", p.Pid))
	p.Check(t)
}

func TestRestoreCorrupted(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "anon"))
	dir := filepath.Join(t.TempDir(), "img")
	_, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: dir})
	require.NoError(t, err)
	p.Kill()
	for _, name := range []string{image.CoreFile(p.Pid), image.PagesFile(p.Pid)} {
		path := filepath.Join(dir, name)
		orig, err := os.ReadFile(path)
		require.NoError(t, err)
		bad := append([]byte(nil), orig...)
		bad[len(bad)-100] ^= 0x55
		require.NoError(t, os.WriteFile(path, bad, 0o600))
		_, err = restore.Run(context.Background(), restore.Options{Dir: dir})
		var fe *image.FormatError
		require.ErrorAs(t, err, &fe, name)
		require.NoDirExists(t, fmt.Sprintf("/proc/%d", p.Pid), "nothing is left running")
		require.NoError(t, os.WriteFile(path, orig, 0o600))
	}
	// The repaired image restores.
	res, err := restore.Run(context.Background(), restore.Options{Dir: dir})
	require.NoError(t, err)
	testutil.Adopt(t, res.Pid, p.Dir).Check(t)
}

func TestRestoreChangedBinary(t *testing.T) {
	testutil.RequireRoot(t)
	src := testutil.BuildC(t, "counter")
	bin := filepath.Join(t.TempDir(), "counter")
	data, err := os.ReadFile(src)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(bin, data, 0o755))
	p := testutil.Start(t, bin)
	dir := filepath.Join(t.TempDir(), "img")
	_, err = dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: dir})
	require.NoError(t, err)
	p.Kill()
	f, err := os.OpenFile(bin, os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	f.Write([]byte{0})
	f.Close()
	_, err = restore.Run(context.Background(), restore.Options{Dir: dir})
	var ce *restore.ChangedFileError
	require.ErrorAs(t, err, &ce)
	require.Contains(t, err.Error(), bin)
	require.NoDirExists(t, fmt.Sprintf("/proc/%d", p.Pid))
}

var _ = errors.Is
var _ = sort.Strings

// TestRoundTripThreads: a C program with 4 pthreads, each with its own
// counter, TLS value, name and signal mask.
func TestRoundTripThreads(t *testing.T) {
	q, _ := roundTrip(t, testutil.BuildC(t, "pthreads", "-pthread"))
	tids := q.IntsInfo(t, "tids")
	for i, tid := range tids {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/comm", q.Pid, tid))
		require.NoError(t, err, "thread %d exists with its tid", tid)
		require.Equal(t, fmt.Sprintf("worker-%d\n", i), string(comm))
	}
	q.Check(t)
	require.Equal(t, 0, q.Stop(t))
}

// TestRoundTripGo: a Go program (goroutines, a ticker, a mutex-protected
// map, channel ping-pong; the runtime's epoll, eventfd and cgroup files).
func TestRoundTripGo(t *testing.T) {
	for _, name := range []string{"gostate", "gothreads"} {
		t.Run(name, func(t *testing.T) {
			q, _ := roundTrip(t, testutil.BuildGo(t, "testdata/"+name))
			q.Check(t)
			require.Equal(t, 0, q.Stop(t))
		})
	}
}

// TestRoundTripPython: the machine's python3 running a script that keeps a
// dict of random data and a counter.
func TestRoundTripPython(t *testing.T) {
	q, _ := roundTrip(t, testutil.PythonScript(t, "pystate.py"))
	q.Check(t)
	require.Equal(t, 0, q.Stop(t))
}

// TestRoundTripSleep: the real sleep binary.
func TestRoundTripSleep(t *testing.T) {
	testutil.RequireRoot(t)
	bin, err := exec.LookPath("sleep")
	require.NoError(t, err)
	dir := t.TempDir()
	null, err := os.Open(os.DevNull)
	require.NoError(t, err)
	defer null.Close()
	pid, err := syscall.ForkExec(bin, []string{"sleep", "1000"}, &syscall.ProcAttr{
		Dir: dir, Files: []uintptr{null.Fd(), null.Fd(), null.Fd()}, Sys: &syscall.SysProcAttr{Setsid: true},
	})
	require.NoError(t, err)
	p := testutil.Adopt(t, pid, dir)
	time.Sleep(50 * time.Millisecond)
	o1 := look(t, pid)
	img := filepath.Join(t.TempDir(), "img")
	_, err = dump.Run(context.Background(), dump.Options{Pid: pid, Dir: img})
	require.NoError(t, err)
	p.Kill()
	res, err := restore.Run(context.Background(), restore.Options{Dir: img})
	require.NoError(t, err)
	q := testutil.Adopt(t, res.Pid, dir)
	o2 := look(t, res.Pid)
	require.Equal(t, o1, o2)
	time.Sleep(100 * time.Millisecond)
	require.True(t, q.Alive(), "sleep goes on sleeping")
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", res.Pid))
	require.NoError(t, err)
	require.Contains(t, string(st), ") S ", "sleeping, not spinning or stopped")
	require.NoError(t, syscall.Kill(res.Pid, syscall.SIGTERM))
	ws := q.Wait(t, 5*time.Second)
	require.Equal(t, syscall.SIGTERM, ws.Signal())
}

// TestRoundTripTree: a parent with a child in its group that shares an open
// file and a pipe with it, a child in its own group, and a zombie.
func TestRoundTripTree(t *testing.T) {
	q, dir := roundTrip(t, testutil.BuildC(t, "family"))
	ck, err := image.Load(dir)
	require.NoError(t, err)
	require.Len(t, ck.Processes, 5, "the parent, three children and a zombie")
	for _, k := range []string{"a", "b", "z", "stopped"} {
		pid := q.IntInfo(t, k)
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		require.NoError(t, err, "child %s (%d) exists with its pid", k, pid)
		f := strings.Fields(string(st)[strings.LastIndexByte(string(st), ')')+2:])
		require.Equal(t, strconv.Itoa(q.Pid), f[1], "child %s's parent", k)
		if k == "z" {
			require.Equal(t, "Z", f[0], "the zombie is a zombie again")
		}
		if k == "stopped" {
			require.Equal(t, "T", f[0], "the stopped child is stopped again")
		}
	}
	for i := 0; i < 3; i++ {
		q.Check(t)
	}
	require.Equal(t, 0, q.Stop(t))
}

// reapTree reaps the dumped (and killed) descendants of a fixture: they were
// reparented to the test process, a child subreaper, and hold their pids
// until reaped.
func reapTree(t testing.TB, dir string) {
	ck, err := image.Load(dir)
	require.NoError(t, err)
	for _, pid := range ck.Inventory.Pids[1:] {
		testutil.Reap(pid, 2*time.Second)
	}
}

// startShell runs bash -c script in dir, as a session leader with
// /dev/null for stdin, stdout and stderr.
func startShell(t *testing.T, dir, script string) *testutil.Proc {
	testutil.RequireRoot(t)
	bash, err := exec.LookPath("bash")
	require.NoError(t, err)
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	require.NoError(t, err)
	defer null.Close()
	pid, err := syscall.ForkExec(bash, []string{"bash", "-c", script}, &syscall.ProcAttr{
		Dir: dir, Env: []string{"PATH=/usr/bin:/bin"}, Files: []uintptr{null.Fd(), null.Fd(), null.Fd()},
		Sys: &syscall.SysProcAttr{Setsid: true},
	})
	require.NoError(t, err)
	return testutil.Adopt(t, pid, dir)
}

// numbers reads a file of one number per line and checks they count up
// from 1 without a gap or a repeat; it returns the last.
func numbers(t *testing.T, path string) int {
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	lines := strings.Fields(string(b))
	for i, l := range lines {
		require.Equal(t, strconv.Itoa(i+1), l, "line %d of %s", i+1, path)
	}
	return len(lines)
}

func waitNumbers(t *testing.T, path string, atLeast int) int {
	deadline := time.Now().Add(10 * time.Second)
	for {
		if b, err := os.ReadFile(path); err == nil && len(strings.Fields(string(b))) >= atLeast {
			return numbers(t, path)
		}
		require.True(t, time.Now().Before(deadline), "%s never reached %d lines", path, atLeast)
		time.Sleep(20 * time.Millisecond)
	}
}

// dumpRestoreShell dumps the shell's tree (killing it), restores it and
// returns the restored root.
func dumpRestoreShell(t *testing.T, p *testutil.Proc) *testutil.Proc {
	img := filepath.Join(t.TempDir(), "img")
	_, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: img})
	require.NoError(t, err)
	p.Kill()
	reapTree(t, img)
	res, err := restore.Run(context.Background(), restore.Options{Dir: img})
	require.NoError(t, err)
	require.Equal(t, p.Pid, res.Pid)
	return testutil.Adopt(t, res.Pid, p.Dir)
}

// TestRoundTripBashLoop: a shell loop that forks sleep; the counter goes on
// from where it was, without a gap or a repeat.
func TestRoundTripBashLoop(t *testing.T) {
	dir := t.TempDir()
	p := startShell(t, dir, `i=0; while :; do i=$((i+1)); echo $i >> f; sleep 0.1; done`)
	n := waitNumbers(t, filepath.Join(dir, "f"), 3)
	q := dumpRestoreShell(t, p)
	waitNumbers(t, filepath.Join(dir, "f"), n+5)
	require.True(t, q.Alive())
	killGroup(q)
}

// TestRoundTripPipeline: producer | consumer, dumped through their common
// parent; nothing lost or repeated in the pipe.
func TestRoundTripPipeline(t *testing.T) {
	dir := t.TempDir()
	p := startShell(t, dir, `i=0; while :; do i=$((i+1)); echo $i; sleep 0.01; done | while read x; do echo $x >> out; done`)
	n := waitNumbers(t, filepath.Join(dir, "out"), 20)
	q := dumpRestoreShell(t, p)
	waitNumbers(t, filepath.Join(dir, "out"), n+50)
	require.True(t, q.Alive())
	killGroup(q)
}

// killGroup kills the restored shell's whole process group and reaps what
// it can (the rest, reparented to the test process, is reaped at the end).
func killGroup(q *testutil.Proc) {
	syscall.Kill(-q.Pid, syscall.SIGKILL)
	q.Kill()
	for i := 0; i < 50; i++ {
		var ws syscall.WaitStatus
		if pid, _ := syscall.Wait4(-q.Pid, &ws, syscall.WNOHANG, nil); pid <= 0 {
			if pid < 0 {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// TestRoundTripSharedMemory: MAP_SHARED anonymous memory and a memfd shared
// by a parent and its child, saved once and shared again after restore.
func TestRoundTripSharedMemory(t *testing.T) {
	q, dir := roundTrip(t, testutil.BuildC(t, "shm"))
	ck, err := image.Load(dir)
	require.NoError(t, err)
	require.Len(t, ck.Shmem, 2, "one object each for the shared memory and the memfd")
	// The 16 MiB of private memory inherited by the child is stored once.
	parent, err := os.Stat(filepath.Join(dir, image.PagesFile(q.Pid)))
	require.NoError(t, err)
	child, err := os.Stat(filepath.Join(dir, image.PagesFile(q.IntInfo(t, "c"))))
	require.NoError(t, err)
	require.Greater(t, parent.Size(), int64(16<<20))
	require.Less(t, child.Size(), int64(1<<20), "pages shared copy-on-write with the parent are not stored again")
	// ... and after the restore they are shared again: the same physical pages.
	priv := q.HexInfo(t, "priv")
	require.Equal(t, pagePFNs(t, q.Pid, priv, 4096), pagePFNs(t, q.IntInfo(t, "c"), priv, 4096),
		"the 16 MiB the child inherited is shared copy-on-write with the parent again")
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", q.IntInfo(t, "c")))
	require.NoError(t, err)
	require.Contains(t, string(maps), "/dev/zero (deleted)")
	require.Contains(t, string(maps), "/memfd:crtest (deleted)")
	q.Check(t)
	q.Check(t)
	require.Equal(t, 0, q.Stop(t))
}

// TestRoundTripSocketpairs: a parent and child exchanging increasing
// sequences over a pipe and stream and datagram socketpairs, with messages
// in flight at the dump: none lost or repeated.
func TestRoundTripSocketpairs(t *testing.T) {
	q, dir := roundTrip(t, testutil.BuildC(t, "pairs"))
	ck, err := image.Load(dir)
	require.NoError(t, err)
	socks := 0
	for _, f := range ck.Files {
		if f.Type == image.FileUnix {
			socks++
		}
	}
	require.Equal(t, 4, socks, "two socketpairs")
	for i := 0; i < 3; i++ {
		time.Sleep(30 * time.Millisecond)
		q.Check(t)
	}
	require.Equal(t, 0, q.Stop(t))
}

// pagePFNs reads the page frame numbers of pages at addr of pid, all present.
func pagePFNs(t *testing.T, pid int, addr uint64, pages int) []uint64 {
	out := testutil.PFNs(t, pid, addr, pages)
	for i, p := range out {
		require.NotZero(t, p, "page %d of pid %d at %#x is not present", i, pid, addr)
	}
	return out
}
