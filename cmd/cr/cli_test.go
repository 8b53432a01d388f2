package main

import (
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/image"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/ from cr's output")

// golden compares got with testdata/NAME, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.MkdirAll("testdata", 0o755))
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test ./cmd/cr -run TestCLIGolden -update to create it")
	require.Equal(t, string(want), got, "cr's output differs from %s (go test -run TestCLIGolden -update rewrites it)", path)
}

// TestCLIGolden: every subcommand's -h gives a synopsis, every option with
// its default (or "required"), and an example; cr -h and cr --version are
// as in their golden files.
func TestCLIGolden(t *testing.T) {
	for _, name := range []string{"dump", "restore", "show", "check", "version", "demo"} {
		o, e, code := cr(t, name, "-h")
		require.Equal(t, 0, code, e)
		require.True(t, strings.HasPrefix(o, "Usage: cr "+name), "%s -h: %q", name, o)
		require.Contains(t, o, "Example")
		// Every option line is followed by its text ending in its default.
		lines := strings.Split(o, "\n")
		for i, l := range lines {
			if strings.HasPrefix(l, "  -") {
				require.Regexp(t, `\((default: .*|required)\)$`, lines[i+1], "%s -h: option %q", name, l)
			}
		}
		golden(t, "help-"+name+".golden", o)
	}
	o, _, code := cr(t, "-h")
	require.Equal(t, 0, code)
	golden(t, "help.golden", o)

	o, _, code = cr(t, "--version")
	require.Equal(t, 0, code)
	o2, _, _ := cr(t, "version")
	require.Equal(t, o, o2)
	require.Contains(t, o, fmt.Sprintf("image format %d.%d\n", image.FormatMajor, image.FormatMinor))
	// The toolchain and the commit vary: golden with placeholders.
	o = regexp.MustCompile(`(?m)^built with .*$`).ReplaceAllString(o, "built with GO OS/ARCH")
	o = regexp.MustCompile(`(?m)^commit .*$`).ReplaceAllString(o, "commit COMMIT")
	golden(t, "version.golden", o)
}

// minimalImage writes a small valid image (as docs/IMAGE.md's example)
// whose process has RLIMIT_STACK at RLIM_INFINITY and an rbp with the top
// bit set: values that a float64 cannot hold.
func minimalImage(t *testing.T) (dir string, pid int) {
	dir = filepath.Join(t.TempDir(), "img")
	pid = 1234
	w, err := image.Create(dir, false)
	require.NoError(t, err)
	pw, err := w.Pages(pid)
	require.NoError(t, err)
	page := make([]byte, image.PageSize)
	page[0] = 1
	require.NoError(t, pw.Write(page))
	require.NoError(t, w.WriteMeta(&image.Checkpoint{
		Inventory: image.Inventory{FormatMajor: image.FormatMajor, FormatMinor: image.FormatMinor, Pids: []int{pid}, RootPid: pid},
		Processes: []*image.Process{{
			Task: image.Task{Pid: pid, Comm: "big", Rlimits: []image.Rlimit{{Resource: 3, Name: "stack", Cur: ^uint64(0), Max: ^uint64(0)}}},
			Threads: []image.Thread{{Tid: pid, XState: &image.XState{Legacy: make([]byte, 512)},
				Regs: image.Regs{Rbp: 0xffff_ffff_ffff_f123, Rip: 0x7fff_ffff_e001}}},
			VMAs:    []image.VMA{{Start: 0x7ffffffde000, End: 0x7ffffffff000, Prot: "rw"}},
			PageMap: []image.PageRun{{Addr: 0x7fffffffe000, Pages: 1, Offset: image.PageSize, CRC: image.CRC(page)}},
		}},
	}))
	require.NoError(t, w.Commit())
	return dir, pid
}

// hexValue reads a "0x..." string of decoded JSON exactly.
func hexValue(t *testing.T, v any) uint64 {
	t.Helper()
	s, ok := v.(string)
	require.True(t, ok, "a 64-bit value must be a hex string, got %T %v", v, v)
	n, err := strconv.ParseUint(s, 0, 64)
	require.NoError(t, err)
	return n
}

// TestShowJSONExact: cr show --json gives 64-bit values as hex strings that
// a JSON decoder (float64 numbers, as jq's) reads back exactly: rbp with
// the top bit set and RLIM_INFINITY.
func TestShowJSONExact(t *testing.T) {
	dir, pid := minimalImage(t)
	o, e, code := cr(t, "show", "-i", dir, "--json")
	require.Equal(t, 0, code, e)
	var v struct {
		Processes []struct {
			Task struct {
				Rlimits []map[string]any `json:"rlimits"`
			} `json:"task"`
			Threads []struct {
				Regs map[string]any `json:"regs"`
			} `json:"threads"`
			VMAs []map[string]any `json:"vmas"`
		} `json:"processes"`
	}
	require.NoError(t, json.Unmarshal([]byte(o), &v))
	p := v.Processes[0]
	require.Equal(t, uint64(0xffff_ffff_ffff_f123), hexValue(t, p.Threads[0].Regs["rbp"]))
	require.Equal(t, uint64(0x7fff_ffff_e001), hexValue(t, p.Threads[0].Regs["rip"]))
	require.Equal(t, ^uint64(0), hexValue(t, p.Task.Rlimits[0]["cur"]))
	require.Equal(t, ^uint64(0), hexValue(t, p.Task.Rlimits[0]["max"]))
	require.Equal(t, uint64(0x7ffffffde000), hexValue(t, p.VMAs[0]["start"]))
	require.Equal(t, "rw", p.VMAs[0]["prot"])

	// One file decoded on its own, the same way.
	o, e, code = cr(t, "show", "-i", dir, "--file", image.CoreFile(pid))
	require.Equal(t, 0, code, e)
	var f struct {
		Kind    string `json:"kind"`
		Records []struct {
			Tag   string         `json:"tag"`
			Value map[string]any `json:"value"`
		} `json:"records"`
	}
	require.NoError(t, json.Unmarshal([]byte(o), &f))
	require.Equal(t, "core", f.Kind)
	require.Equal(t, "thread", f.Records[1].Tag)
	require.Equal(t, uint64(0xffff_ffff_ffff_f123), hexValue(t, f.Records[1].Value["regs"].(map[string]any)["rbp"]))
	o, e, code = cr(t, "show", "-i", dir, "--file", image.PagesFile(pid))
	require.Equal(t, 0, code, e)
	require.Contains(t, o, `"pages": "0x1"`)
}

// TestShowCRIUImage: a directory written by CRIU is named as such, not
// called corrupted.
func TestShowCRIUImage(t *testing.T) {
	dir := t.TempDir()
	// CRIU v1.1 inventory.img: IMG_COMMON_MAGIC, INVENTORY_MAGIC, then a
	// protobuf entry (its contents do not matter here).
	b := binary.LittleEndian.AppendUint32(nil, 0x54564319)
	b = binary.LittleEndian.AppendUint32(b, 0x58313116)
	b = append(b, 4, 0, 0, 0, 8, 2, 16, 1)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "inventory.img"), b, 0o600))
	for _, args := range [][]string{{"show", "-i", dir}, {"show", "-i", dir, "ps"}, {"restore", "-i", dir}, {"show", "-i", dir, "--file", "inventory.img"}} {
		_, e, code := cr(t, args...)
		require.Equal(t, 1, code, "%v: %s", args, e)
		oneLine(t, e)
		require.Contains(t, e, "this is a CRIU image directory; cr cannot read CRIU images", "%v", args)
		require.NotContains(t, e, "corrupted")
	}
}

// TestShowViews: the crit-like views of a real image.
func TestShowViews(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "counter"))
	dir := filepath.Join(t.TempDir(), "img")
	_, e, code := cr(t, "dump", "-t", strconv.Itoa(p.Pid), "-D", dir, "--leave-running")
	require.Equal(t, 0, code, e)
	p.Check(t)
	pid := strconv.Itoa(p.Pid)
	o, e, code := cr(t, "show", "-i", dir, "ps")
	require.Equal(t, 0, code, e)
	require.Regexp(t, `(?m)^PID\s+PPID\s+PGID\s+SID\s+STATE\s+COMM\s+THREADS$`, o)
	require.Regexp(t, `(?m)^`+pid+`\s+\d+\s+\d+\s+\d+\s+running\s+counter\S*\s+`+pid+`$`, o)
	o, e, code = cr(t, "show", "-i", dir, "fds")
	require.Equal(t, 0, code, e)
	require.Regexp(t, `(?m)^`+pid+`\s+cwd\s+dir\s+-\s+-\s+/`, o)
	require.Regexp(t, `(?m)^`+pid+`\s+1\s+reg\s+O_WRONLY\S*\s+\d+\s+/`, o)
	o, e, code = cr(t, "show", "-i", dir, "mems")
	require.Equal(t, 0, code, e)
	require.Regexp(t, `(?m)^`+pid+`\s+[0-9a-f]{12}\s+[0-9a-f]{12}\s+rx\s+2\s+0\s+\[vdso\]$`, o)
	require.Regexp(t, `(?m)\s+[1-9]\d*\s+\[stack\]$`, o)
	o, e, code = cr(t, "show", "-i", dir, "rss")
	require.Equal(t, 0, code, e)
	require.Contains(t, o, "pages-"+pid+".img@0x1000")
	for _, view := range []string{"files", "sockets", "ipc"} {
		_, e, code = cr(t, "show", "-i", dir, view)
		require.Equal(t, 0, code, "%s: %s", view, e)
	}
	// --json after the view: rows with the same figures.
	o, e, code = cr(t, "show", "-i", dir, "ps", "--json")
	require.Equal(t, 0, code, e)
	var rows []psRow
	require.NoError(t, json.Unmarshal([]byte(o), &rows))
	require.Equal(t, p.Pid, rows[0].Pid)
	require.True(t, strings.HasPrefix(rows[0].Comm, "counter"))
	_, e, code = cr(t, "show", "-i", dir, "nosuchview")
	require.Equal(t, 2, code)
	require.Contains(t, e, "views: fds, files, ipc, mems, ps, rss, sockets")
}

// procState is the state letter of /proc/PID/stat.
func procState(t *testing.T, pid int) byte {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	require.NoError(t, err)
	s := string(b)
	return s[strings.LastIndexByte(s, ')')+2]
}

func waitState(t *testing.T, pid int, want byte) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for procState(t, pid) != want {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d: state %c, want %c", pid, procState(t, pid), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestLeaveStopped: dump --leave-stopped leaves the tree stopped (SIGCONT
// resumes it, unharmed); restore --leave-stopped leaves the restored tree
// stopped.
func TestLeaveStopped(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "counter"))
	dir := filepath.Join(t.TempDir(), "img")
	_, e, code := cr(t, "dump", "-t", strconv.Itoa(p.Pid), "-o", dir, "--leave-stopped")
	require.Equal(t, 0, code, e)
	waitState(t, p.Pid, 'T')
	require.NoError(t, unix.Kill(p.Pid, unix.SIGCONT))
	p.Check(t)
	p.Kill()

	_, e, code = cr(t, "restore", "-i", dir, "-d", "--leave-stopped")
	require.Equal(t, 0, code, e)
	q := testutil.Adopt(t, p.Pid, p.Dir)
	waitState(t, p.Pid, 'T')
	require.NoError(t, unix.Kill(p.Pid, unix.SIGCONT))
	q.Check(t)

	_, e, code = cr(t, "dump", "-t", strconv.Itoa(p.Pid), "-o", dir+"2", "--leave-stopped", "--leave-running")
	require.Equal(t, 2, code, e)
}

// TestActionScript: the scripts run at CRIU's points with CRIU's
// environment; a failing pre-dump script leaves the target running and
// writes nothing; a failing post-restore script leaves nothing running.
func TestActionScript(t *testing.T) {
	testutil.RequireRoot(t)
	work := t.TempDir()
	out := filepath.Join(work, "calls")
	script := fmt.Sprintf(`echo "$CRTOOLS_SCRIPT_ACTION $CRTOOLS_INIT_PID $CRTOOLS_IMAGE_DIR" >> %s; [ "$CRTOOLS_SCRIPT_ACTION" != "$FAIL_AT" ]`, out)
	p := testutil.Start(t, testutil.BuildC(t, "counter"))
	dir := filepath.Join(work, "img")
	pid := strconv.Itoa(p.Pid)

	t.Setenv("FAIL_AT", "pre-dump")
	_, e, code := cr(t, "dump", "-t", pid, "-o", dir, "--action-script", script)
	require.Equal(t, 1, code, e)
	oneLine(t, e)
	require.Contains(t, e, "pre-dump: action script")
	require.Contains(t, e, "exit status 1")
	require.NoDirExists(t, dir)
	p.Check(t)

	t.Setenv("FAIL_AT", "")
	_, e, code = cr(t, "dump", "-t", pid, "-o", dir, "--action-script", script)
	require.Equal(t, 0, code, e)
	p.Kill()
	t.Setenv("FAIL_AT", "post-restore")
	_, e, code = cr(t, "restore", "-i", dir, "-d", "--action-script", script)
	require.Equal(t, 1, code, e)
	require.Contains(t, e, "post-restore: action script")
	require.NoDirExists(t, "/proc/"+pid)

	t.Setenv("FAIL_AT", "")
	_, e, code = cr(t, "restore", "-i", dir, "-d", "--action-script", script)
	require.Equal(t, 0, code, e)
	q := testutil.Adopt(t, p.Pid, p.Dir)
	q.Check(t)
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	want := ""
	for _, a := range []string{"pre-dump", "pre-dump", "post-dump", "pre-restore", "post-restore", "pre-restore", "post-restore"} {
		want += a + " " + pid + " " + dir + "\n"
	}
	require.Equal(t, want, string(b))
}

// TestLogFile: --log-file takes the log (progress at -v4, the error chain);
// stderr keeps only the one-line error; -v0 silences it; -vN parses.
func TestLogFile(t *testing.T) {
	testutil.RequireRoot(t)
	work := t.TempDir()
	log := filepath.Join(work, "dump.log")
	p := testutil.Start(t, testutil.BuildC(t, "counter"))
	_, e, code := cr(t, "dump", "-t", strconv.Itoa(p.Pid), "-o", filepath.Join(work, "img"), "--leave-running", "--log-file", log, "-v4")
	require.Equal(t, 0, code, e)
	require.Empty(t, e)
	b, err := os.ReadFile(log)
	require.NoError(t, err)
	require.Contains(t, string(b), "froze 1 processes")
	p.Check(t)

	_, e, code = cr(t, "dump", "-t", "999999999", "-o", filepath.Join(work, "img2"), "--log-file", log)
	require.Equal(t, 1, code)
	oneLine(t, e)
	b, err = os.ReadFile(log)
	require.NoError(t, err)
	require.Contains(t, string(b), "cr: process 999999999")
	require.Contains(t, string(b), "caused by:")

	_, e, code = cr(t, "dump", "-t", "999999999", "-o", filepath.Join(work, "img2"), "-v0")
	require.Equal(t, 1, code)
	require.Empty(t, e)
	_, e, code = cr(t, "dump", "-t", "999999999", "-o", filepath.Join(work, "img2"), "-v3")
	require.Equal(t, 1, code)
	oneLine(t, e)
	_, e, code = cr(t, "dump", "-t", "999999999", "-o", filepath.Join(work, "img2"), "-v5")
	require.Equal(t, 2, code)
	require.Contains(t, e, "want 0 to 4")
}

// TestDumpRefusesLogPath: CRIU's `-o dump.log` is refused (cr's -o is the
// image directory), pointing to --log-file; nothing is created, the target
// runs on.
func TestDumpRefusesLogPath(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "counter"))
	dir := filepath.Join(t.TempDir(), "dump.log")
	_, e, code := cr(t, "dump", "-t", strconv.Itoa(p.Pid), "-o", dir)
	require.Equal(t, 2, code)
	oneLine(t, e)
	require.Contains(t, e, "--log-file")
	require.NoDirExists(t, dir)
	require.NoFileExists(t, dir)
	p.Check(t)
}

// TestDisplayStats: --display-stats prints the figures, and the same are
// in the image's stats files, which leave the image readable.
func TestDisplayStats(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "counter"))
	dir := filepath.Join(t.TempDir(), "img")
	_, e, code := cr(t, "dump", "-t", strconv.Itoa(p.Pid), "-o", dir, "--display-stats")
	require.Equal(t, 0, code, e)
	for _, s := range []string{"dump statistics:", "frozen time", "freezing", "memory dump", "pages scanned", "pages skipped", "pages written", "image size", "MB/s"} {
		require.Contains(t, e, s)
	}
	var ds image.DumpStats
	b, err := os.ReadFile(filepath.Join(dir, image.DumpStatsFile))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &ds))
	require.NotZero(t, ds.PagesWritten)
	require.GreaterOrEqual(t, ds.PagesScanned, ds.PagesWritten)
	require.Greater(t, ds.FrozenUs, int64(0))
	require.Greater(t, ds.ImageBytes, int64(ds.PagesWritten*image.PageSize))
	require.Contains(t, e, fmt.Sprintf("pages written          %d ", ds.PagesWritten))
	p.Kill()

	_, e, code = cr(t, "restore", "-i", dir, "-d", "--display-stats")
	require.Equal(t, 0, code, e)
	q := testutil.Adopt(t, p.Pid, p.Dir)
	q.Check(t)
	require.Contains(t, e, "restore statistics:")
	require.Contains(t, e, fmt.Sprintf("pages restored         %d ", ds.PagesWritten))
	var rs image.RestoreStats
	b, err = os.ReadFile(filepath.Join(dir, image.RestoreStatsFile))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &rs))
	require.Equal(t, ds.PagesWritten, rs.PagesRestored)
	_, e, code = cr(t, "show", "-i", dir)
	require.Equal(t, 0, code, e)
}
