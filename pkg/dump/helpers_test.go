package dump_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/dump"
	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

const pageSize = image.PageSize

// mapsEntry is one line of /proc/PID/maps, parsed independently of memdump.
type mapsEntry struct {
	Start, End uint64
	Perms      string // "rw-p"
	Path       string
}

func (m mapsEntry) String() string {
	return fmt.Sprintf("%x-%x %s %s", m.Start, m.End, m.Perms, m.Path)
}

// readMaps parses /proc/PID/maps, skipping [vsyscall].
func readMaps(t testing.TB, pid int) []mapsEntry {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatalf("read maps of %d: %v", pid, err)
	}
	var out []mapsEntry
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		line := s.Text()
		// 5 fixed fields, then the path (which may contain spaces).
		rest := line
		var f []string
		for i := 0; i < 5; i++ {
			rest = strings.TrimLeft(rest, " ")
			j := strings.IndexByte(rest, ' ')
			if j < 0 {
				f = append(f, rest)
				rest = ""
				continue
			}
			f = append(f, rest[:j])
			rest = rest[j:]
		}
		a, z, _ := strings.Cut(f[0], "-")
		var e mapsEntry
		e.Start, _ = strconv.ParseUint(a, 16, 64)
		e.End, _ = strconv.ParseUint(z, 16, 64)
		e.Perms = f[1]
		e.Path = strings.TrimLeft(rest, " ")
		if e.Path == "[vsyscall]" {
			continue
		}
		out = append(out, e)
	}
	return out
}

// vmaAsMaps renders an image VMA the way /proc/PID/maps shows it.
func vmaAsMaps(v *image.VMA) mapsEntry {
	perms := []byte("---p")
	for i, c := range "rwx" {
		if strings.ContainsRune(v.Prot, c) {
			perms[i] = byte(c)
		}
	}
	if v.Has(image.VMAShared) {
		perms[3] = 's'
	}
	e := mapsEntry{Start: v.Start, End: v.End, Perms: string(perms)}
	switch {
	case v.File != nil:
		e.Path = v.File.Path
	case v.Special != "":
		e.Path = "[" + v.Special + "]"
	}
	return e
}

// checkVMAs compares the image's VMAs with a maps listing.
func checkVMAs(t testing.TB, proc *image.Process, maps []mapsEntry, what string) {
	t.Helper()
	var got []mapsEntry
	for i := range proc.VMAs {
		got = append(got, vmaAsMaps(&proc.VMAs[i]))
	}
	n := max(len(got), len(maps))
	for i := 0; i < n; i++ {
		var g, w mapsEntry
		if i < len(got) {
			g = got[i]
		}
		if i < len(maps) {
			w = maps[i]
		}
		if g != w {
			t.Errorf("vma %d: image has %q, %s has %q", i, g, what, w)
		}
	}
}

// freeze stops pid with SIGSTOP until the returned function is called (or
// the test ends), so that its memory can be read at rest.
func freeze(t testing.TB, pid int) (thaw func()) {
	t.Helper()
	if err := unix.Kill(pid, unix.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP %d: %v", pid, err)
	}
	done := false
	thaw = func() {
		if !done {
			done = true
			unix.Kill(pid, unix.SIGCONT)
		}
	}
	t.Cleanup(thaw)
	for deadline := time.Now().Add(5 * time.Second); ; {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			t.Fatalf("stat %d: %v", pid, err)
		}
		s := string(b)
		if f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]); len(f) > 0 && f[0] == "T" {
			return thaw
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d did not stop", pid)
		}
		time.Sleep(time.Millisecond)
	}
}

// readLive reads n bytes at addr from /proc/PID/mem.
func readLive(t testing.TB, pid int, addr uint64, n int) []byte {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, int64(addr)); err != nil {
		t.Fatalf("read memory of %d at %#x+%d: %v", pid, addr, n, err)
	}
	return buf
}

// img is a dumped fixture with its loaded image.
type img struct {
	p     *testutil.Proc
	dir   string
	res   *dump.Result
	ck    *image.Checkpoint
	proc  *image.Process
	pages *os.File
	where map[uint64]uint64 // saved page address -> offset in the pages file
	maps  []mapsEntry       // /proc/PID/maps just before the dump
}

// dumpFixture starts fixture name (built with flags), dumps it with
// LeaveRunning, and loads and verifies the image.
func dumpFixture(t *testing.T, name string, flags []string, args ...string) *img {
	t.Helper()
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, name, flags...), args...)
	d := &img{p: p, dir: filepath.Join(t.TempDir(), "img")}
	d.maps = readMaps(t, p.Pid)
	res, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: d.dir, LeaveRunning: true})
	if err != nil {
		t.Fatalf("dump %s (pid %d): %v", name, p.Pid, err)
	}
	d.res = res
	if res.Dir != d.dir {
		t.Errorf("Result.Dir %q, want %q", res.Dir, d.dir)
	}
	if res.Frozen <= 0 || res.PagesTime <= 0 || res.PagesTime > res.Frozen {
		t.Errorf("Result times: frozen %v, pages %v", res.Frozen, res.PagesTime)
	}
	d.ck, err = image.Load(d.dir)
	if err != nil {
		t.Fatalf("load image: %v", err)
	}
	if len(d.ck.Processes) != 1 {
		t.Fatalf("image holds %d processes", len(d.ck.Processes))
	}
	d.proc = d.ck.Processes[0]
	if err := image.VerifyPages(d.dir, d.proc); err != nil {
		t.Fatalf("verify pages: %v", err)
	}
	var pages uint64
	d.where = map[uint64]uint64{}
	for _, r := range d.proc.PageMap {
		pages += r.Pages
		for i := uint64(0); i < r.Pages; i++ {
			d.where[r.Addr+i*pageSize] = r.Offset + i*pageSize
		}
	}
	if pages != res.Pages || uint64(len(d.where)) != pages {
		t.Errorf("Result.Pages %d, page map has %d pages (%d distinct)", res.Pages, pages, len(d.where))
	}
	d.pages, err = image.OpenPages(d.dir, d.proc.Task.Pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.pages.Close() })
	t.Logf("%s: %d pages saved, frozen %v (pages %v)", name, res.Pages, res.Frozen, res.PagesTime)
	return d
}

// saved returns the saved bytes of the page at addr, or nil.
func (d *img) saved(t testing.TB, addr uint64) []byte {
	t.Helper()
	off, ok := d.where[addr]
	if !ok {
		return nil
	}
	b := make([]byte, pageSize)
	if _, err := d.pages.ReadAt(b, int64(off)); err != nil {
		t.Fatalf("read saved page %#x: %v", addr, err)
	}
	return b
}

// savedIn lists the page indexes (relative to start) saved in [start, end).
func (d *img) savedIn(start, end uint64) []uint64 {
	var out []uint64
	for a := start; a < end; a += pageSize {
		if _, ok := d.where[a]; ok {
			out = append(out, (a-start)/pageSize)
		}
	}
	return out
}

// vmaAt returns the image VMA containing addr.
func (d *img) vmaAt(addr uint64) *image.VMA {
	for i := range d.proc.VMAs {
		if v := &d.proc.VMAs[i]; v.Start <= addr && addr < v.End {
			return v
		}
	}
	return nil
}

// checkCommon runs the checks every dumped fixture must pass: VMAs equal
// /proc/PID/maps (before the dump and now), every saved page equals live
// memory (apart from pages the program changes while it runs: its stack,
// the counter's page and the TLS/rseq area around fs_base), only private
// VMAs have saved pages, and the process goes on running.
func (d *img) checkCommon(t *testing.T) {
	t.Helper()
	pid := d.p.Pid
	checkVMAs(t, d.proc, d.maps, "maps before the dump")

	thaw := freeze(t, pid)
	checkVMAs(t, d.proc, readMaps(t, pid), "maps after the dump")
	th := d.proc.Threads[0]
	counterAddr := d.p.HexInfo(t, "counter")
	volatile := func(addr uint64) bool {
		if v := d.vmaAt(addr); v != nil && v.Special == image.SpecialStack {
			return true
		}
		if addr == counterAddr&^(pageSize-1) {
			return true
		}
		fs := th.Regs.FsBase
		if addr+2*pageSize > fs && addr < fs+2*pageSize {
			return true // TLS (errno) and the TCB with the rseq area
		}
		if r := th.Rseq; r != nil && addr == r.Ptr&^(pageSize-1) {
			return true
		}
		return false
	}
	var compared, differ, allowed int
	for _, r := range d.proc.PageMap {
		v := d.vmaAt(r.Addr)
		if v == nil {
			t.Errorf("page run %#x outside every vma", r.Addr)
			continue
		}
		if v.Has(image.VMAShared) || v.Special == image.SpecialVdso || v.Special == image.SpecialVvar || v.Special == image.SpecialVvarVclock {
			t.Errorf("page run %#x+%d saved from vma %q", r.Addr, r.Pages, vmaAsMaps(v))
		}
		live := readLive(t, pid, r.Addr, int(r.Pages*pageSize))
		for i := uint64(0); i < r.Pages; i++ {
			a := r.Addr + i*pageSize
			got := d.saved(t, a)
			compared++
			if bytes.Equal(got, live[i*pageSize:(i+1)*pageSize]) {
				continue
			}
			if volatile(a) {
				allowed++
				continue
			}
			differ++
			if differ <= 5 {
				t.Errorf("saved page %#x (vma %q) differs from live memory", a, vmaAsMaps(v))
			}
		}
	}
	if differ > 0 {
		t.Errorf("%d of %d saved pages differ from live memory", differ, compared)
	}
	// The counter: saved value > 0 and not above the live one.
	if pg := d.saved(t, counterAddr&^(pageSize-1)); pg != nil {
		savedN := leUint64(pg[counterAddr%pageSize:])
		liveN := leUint64(readLive(t, pid, counterAddr, 8))
		if savedN > liveN {
			t.Errorf("saved counter %d > live counter %d", savedN, liveN)
		}
	}
	thaw()
	t.Logf("compared %d saved pages with live memory; %d expected changes", compared, allowed)

	if !d.p.Alive() {
		t.Fatalf("pid %d is gone after a dump with LeaveRunning", pid)
	}
	d.p.Check(t)
	time.Sleep(10 * time.Millisecond)
	d.p.Check(t)
}

func leUint64(b []byte) uint64 {
	var x uint64
	for i := 7; i >= 0; i-- {
		x = x<<8 | uint64(b[i])
	}
	return x
}

// pattern is fixture.h's pattern(): the 64-bit word at byte offset off.
func pattern(off, seed uint64) uint64 {
	return (off * 2654435761) ^ 0xdeadbeef ^ (seed << 40)
}

// checkPattern reports the first offset at which b differs from the pattern
// of seed starting at byte offset base, or -1.
func checkPattern(b []byte, base, seed uint64) int {
	for i := 0; i+8 <= len(b); i += 8 {
		if leUint64(b[i:]) != pattern(base+uint64(i), seed) {
			return i
		}
	}
	return -1
}
