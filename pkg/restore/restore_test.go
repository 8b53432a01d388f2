package restore_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
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
	for _, e := range ents {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
		require.NoError(t, err)
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
	_, err := dump.Run(dump.Options{Pid: p.Pid, Dir: dir})
	require.NoError(t, err)
	p.Kill() // dumped and killed: make sure it is reaped

	res, err := restore.Run(restore.Options{Dir: dir})
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
	for _, name := range []string{"anon", "sparse", "filemap", "files", "signals", "counter", "sigstate", "creds", "strict"} {
		t.Run(name, func(t *testing.T) {
			q, _ := roundTrip(t, testutil.BuildC(t, name))
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
	_, err := dump.Run(dump.Options{Pid: p.Pid, Dir: dir})
	require.NoError(t, err)
	p.Kill()
	require.NoError(t, os.WriteFile(file, []byte("hello, world!\nxxxx\n"), 0o644))

	res, err := restore.Run(restore.Options{Dir: dir})
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
	res, err := restore.Run(restore.Options{Dir: dir})
	require.NoError(t, err)
	q2 := testutil.Adopt(t, res.Pid, q.Dir)
	q2.Check(t)
	require.Equal(t, 0, q2.Stop(t))
}

func TestRestorePidInUse(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "counter"))
	dir := filepath.Join(t.TempDir(), "img")
	_, err := dump.Run(dump.Options{Pid: p.Pid, Dir: dir, LeaveRunning: true})
	require.NoError(t, err)
	_, err = restore.Run(restore.Options{Dir: dir})
	var e *restore.PidInUseError
	require.ErrorAs(t, err, &e)
	require.Contains(t, err.Error(), fmt.Sprintf("pid %d is in use", p.Pid))
	p.Check(t)
}

func TestRestoreCorrupted(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "anon"))
	dir := filepath.Join(t.TempDir(), "img")
	_, err := dump.Run(dump.Options{Pid: p.Pid, Dir: dir})
	require.NoError(t, err)
	p.Kill()
	for _, name := range []string{image.CoreFile(p.Pid), image.PagesFile(p.Pid)} {
		path := filepath.Join(dir, name)
		orig, err := os.ReadFile(path)
		require.NoError(t, err)
		bad := append([]byte(nil), orig...)
		bad[len(bad)-100] ^= 0x55
		require.NoError(t, os.WriteFile(path, bad, 0o600))
		_, err = restore.Run(restore.Options{Dir: dir})
		var fe *image.FormatError
		require.ErrorAs(t, err, &fe, name)
		require.NoDirExists(t, fmt.Sprintf("/proc/%d", p.Pid), "nothing is left running")
		require.NoError(t, os.WriteFile(path, orig, 0o600))
	}
	// The repaired image restores.
	res, err := restore.Run(restore.Options{Dir: dir})
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
	_, err = dump.Run(dump.Options{Pid: p.Pid, Dir: dir})
	require.NoError(t, err)
	p.Kill()
	f, err := os.OpenFile(bin, os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	f.Write([]byte{0})
	f.Close()
	_, err = restore.Run(restore.Options{Dir: dir})
	var ce *restore.ChangedFileError
	require.ErrorAs(t, err, &ce)
	require.Contains(t, err.Error(), bin)
	require.NoDirExists(t, fmt.Sprintf("/proc/%d", p.Pid))
}

var _ = errors.Is
var _ = sort.Strings
