package dump_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cr-tools/cr/internal/cpu"
	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/dump"
	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// Every fixture: VMAs, saved pages against live memory, the process keeps
// running, the inventory.
func TestDumpFixtures(t *testing.T) {
	for _, f := range []struct {
		name  string
		flags []string
	}{
		{"anon", nil}, {"sparse", nil}, {"filemap", nil}, {"files", nil},
		{"signals", nil}, {"spin_avx", []string{"-mavx512f", "-mavx2"}}, {"counter", nil},
	} {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			if f.name == "spin_avx" {
				testutil.RequireAVX512(t)
			}
			d := dumpFixture(t, f.name, f.flags)
			d.checkCommon(t)
			checkInventory(t, d)
		})
	}
}

func checkInventory(t *testing.T, d *img) {
	t.Helper()
	inv := &d.ck.Inventory
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	if rel := unix.ByteSliceToString(u.Release[:]); inv.Kernel.Release != rel {
		t.Errorf("inventory kernel release %q, uname %q", inv.Kernel.Release, rel)
	}
	if inv.Kernel.Machine != "x86_64" || inv.CPU.Arch != "x86_64" {
		t.Errorf("inventory machine %q arch %q", inv.Kernel.Machine, inv.CPU.Arch)
	}
	if inv.CPU.XFeatures == 0 || inv.CPU.XFeatures&3 != 3 {
		t.Errorf("inventory xfeatures %#x", inv.CPU.XFeatures)
	}
	if len(d.proc.Threads) != 1 {
		t.Fatalf("%d threads in the image", len(d.proc.Threads))
	}
	if inv.CPU.XSaveSize != cpu.XSaveSize() || inv.CPU.XFeatures != cpu.XCR0() || inv.CPU.Vendor != cpu.Vendor(cpu.CPUID) {
		t.Errorf("inventory xsave %#x, %d bytes, vendor %q; this machine %#x, %d", inv.CPU.XFeatures, inv.CPU.XSaveSize, inv.CPU.Vendor, cpu.XCR0(), cpu.XSaveSize())
	}
	if got, want := cpu.FeatureNames(inv.CPU.Leaves()), cpu.FeatureNames(cpu.HostLeaves()); strings.Join(got, " ") != strings.Join(want, " ") || len(got) == 0 {
		t.Errorf("inventory cpu features %v, this machine %v", got, want)
	}
	if th := &d.proc.Threads[0]; th.XState == nil || len(th.XSave) != 0 || th.XState.XStateBV&^cpu.XCR0() != 0 {
		t.Errorf("thread register state: xsave %d bytes, xstate present %v", len(th.XSave), th.XState != nil)
	}
	if d.proc.Task.XCompPerm&cpu.XCR0() != cpu.XCR0()&^(1<<cpu.XFeatTileData) {
		t.Errorf("xcomp perm %#x, xcr0 %#x", d.proc.Task.XCompPerm, cpu.XCR0())
	}
	if inv.RootPid != d.p.Pid || len(inv.Pids) != 1 || inv.Pids[0] != d.p.Pid || d.proc.Task.Pid != d.p.Pid {
		t.Errorf("inventory pids %d %v, task pid %d, want %d", inv.RootPid, inv.Pids, d.proc.Task.Pid, d.p.Pid)
	}
	if !inv.Options.LeaveRunning || inv.FormatMajor != image.FormatMajor || inv.CRVersion != dump.Version {
		t.Errorf("inventory %+v", inv)
	}
	if _, err := time.Parse(time.RFC3339Nano, inv.DumpTime); err != nil {
		t.Errorf("dump time %q: %v", inv.DumpTime, err)
	}
	// Image files and directory are private (they hold process memory).
	if st, err := os.Stat(d.dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("image dir mode %v (%v)", st.Mode(), err)
	}
	ents, _ := os.ReadDir(d.dir)
	for _, e := range ents {
		if info, err := e.Info(); err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("image file %s mode %v", e.Name(), info.Mode())
		}
	}
	// Nothing else is left beside the image (no temp directory).
	if ents, _ := os.ReadDir(filepath.Dir(d.dir)); len(ents) != 1 {
		t.Errorf("parent of the image holds %d entries", len(ents))
	}
}

func TestDumpAnon(t *testing.T) {
	t.Parallel()
	d := dumpFixture(t, "anon", nil)
	for _, r := range []struct {
		key  string
		seed uint64
	}{{"anon", 1}, {"heap", 2}, {"data", 3}, {"bss", 4}} {
		addr := d.p.HexInfo(t, r.key)
		n := d.p.HexInfo(t, r.key+"_len")
		if r.key == "anon" && n != 8<<20 {
			t.Fatalf("anon_len %d", n)
		}
		first, last := addr&^(pageSize-1), (addr+n+pageSize-1)&^(pageSize-1)
		if got, want := len(d.savedIn(first, last)), int((last-first)/pageSize); got != want {
			t.Errorf("%s: %d of %d pages saved", r.key, got, want)
			continue
		}
		for a := first; a < last; a += pageSize {
			pg := d.saved(t, a)
			lo, hi := max(addr, a), min(addr+n, a+pageSize)
			if off := checkPattern(pg[lo-a:hi-a], lo-addr, r.seed); off >= 0 {
				t.Errorf("%s: saved page %#x differs from the pattern at +%d", r.key, a, off)
				break
			}
		}
	}
	if v := d.vmaAt(d.p.HexInfo(t, "heap")); d.p.Info["heap_is_brk"] == "1" && (v == nil || v.Special != image.SpecialHeap) {
		t.Errorf("heap buffer is not in the [heap] vma: %+v", v)
	}
	mm := &d.proc.MM
	if mm.Brk < mm.StartBrk || mm.Brk < d.p.HexInfo(t, "heap")+d.p.HexInfo(t, "heap_len") {
		t.Errorf("brk %#x start_brk %#x", mm.Brk, mm.StartBrk)
	}
	d.p.Check(t)
}

func TestDumpSparse(t *testing.T) {
	t.Parallel()
	d := dumpFixture(t, "sparse", nil)
	sp, n := d.p.HexInfo(t, "sparse"), d.p.HexInfo(t, "sparse_len")
	touched := d.p.IntsInfo(t, "touched")
	got := d.savedIn(sp, sp+n)
	if fmt.Sprint(got) != fmt.Sprint(touched) {
		t.Errorf("saved pages of the sparse mapping: %v, want %v", got, touched)
	}
	for _, idx := range touched {
		a := sp + uint64(idx)*pageSize
		if pg := d.saved(t, a); pg != nil {
			if off := checkPattern(pg, 0, 100+uint64(idx)); off >= 0 {
				t.Errorf("touched page %d differs from the pattern at +%d", idx, off)
			}
		}
	}
	ro, rn := d.p.HexInfo(t, "readonly"), d.p.HexInfo(t, "readonly_len")
	if got := d.savedIn(ro, ro+rn); len(got) != 0 {
		t.Errorf("%d pages of the read-only zero-page mapping saved: %v", len(got), got)
	}
	if v := d.vmaAt(ro); v == nil || v.Start != ro || v.End != ro+rn || v.Prot != "r" {
		t.Errorf("read-only vma %+v", v)
	}
	d.p.Check(t)
}

func TestDumpFilemap(t *testing.T) {
	t.Parallel()
	d := dumpFixture(t, "filemap", nil)
	priv, ro, sh := d.p.HexInfo(t, "priv"), d.p.HexInfo(t, "ro"), d.p.HexInfo(t, "shared")
	n, shn := d.p.HexInfo(t, "priv_len"), d.p.HexInfo(t, "shared_len")
	cow := d.p.IntsInfo(t, "cow_pages")
	if got := d.savedIn(priv, priv+n); fmt.Sprint(got) != fmt.Sprint(cow) {
		t.Errorf("saved pages of the private file mapping: %v, want the COW pages %v", got, cow)
	}
	for _, pgno := range cow {
		off := uint64(pgno) * pageSize
		if pg := d.saved(t, priv+off); pg != nil {
			if x := checkPattern(pg, off, 8); x >= 0 {
				t.Errorf("COW page %d differs from the pattern at +%d", pgno, x)
			}
		}
	}
	if got := d.savedIn(ro, ro+n); len(got) != 0 {
		t.Errorf("pages of the read-only file mapping saved: %v", got)
	}
	if got := d.savedIn(sh, sh+shn); len(got) != 0 {
		t.Errorf("pages of the shared file mapping saved: %v", got)
	}
	dataPath := filepath.Join(d.p.Dir, d.p.Info["data_file"])
	shPath := filepath.Join(d.p.Dir, d.p.Info["shared_file"])
	for _, c := range []struct {
		addr   uint64
		path   string
		prot   string
		shared bool
	}{{priv, dataPath, "rw", false}, {ro, dataPath, "r", false}, {sh, shPath, "rw", true}} {
		v := d.vmaAt(c.addr)
		if v == nil || v.File == nil {
			t.Errorf("no file vma at %#x: %+v", c.addr, v)
			continue
		}
		var st unix.Stat_t
		if err := unix.Stat(c.path, &st); err != nil {
			t.Fatal(err)
		}
		if v.File.Path != c.path || v.File.Ino != st.Ino || v.File.Dev != st.Dev || v.File.Size != st.Size ||
			v.Prot != c.prot || v.Has(image.VMAShared) != c.shared || v.Pgoff != 0 {
			t.Errorf("vma at %#x: %+v file %+v; want %s %s shared=%v ino %d", c.addr, v, v.File, c.path, c.prot, c.shared, st.Ino)
		}
	}
	d.p.Check(t)
}

func TestDumpSpinAVX(t *testing.T) {
	t.Parallel()
	testutil.RequireAVX512(t)
	d := dumpFixture(t, "spin_avx", []string{"-mavx512f", "-mavx2"})
	th := d.proc.Threads[0]
	for _, r := range []struct {
		name string
		got  uint64
	}{{"r12", th.Regs.R12}, {"r13", th.Regs.R13}, {"r14", th.Regs.R14}, {"r15", th.Regs.R15}, {"fsbase", th.Regs.FsBase}} {
		if want := d.p.HexInfo(t, r.name); r.got != want {
			t.Errorf("%s = %#x, want %#x", r.name, r.got, want)
		}
	}
	if th.Syscall != nil {
		t.Errorf("spinning thread recorded as in syscall %+v", th.Syscall)
	}

	// The image holds the XSAVE state per component; the offsets of this
	// machine's standard-format area come from CPUID leaf 0xd (Intel and
	// AMD differ: the opmask is at 1088 on one, 832 on the other).
	xs := th.XState
	if xs == nil {
		t.Fatal("no xstate in the image")
	}
	le := binary.LittleEndian
	for _, bit := range []uint{1, 2, 5, 6, 7} {
		if xs.XStateBV&(1<<bit) == 0 {
			t.Errorf("xstate_bv %#x lacks %s", xs.XStateBV, cpu.ComponentName(bit))
		}
	}
	comp := map[uint][]byte{}
	for _, c := range xs.Components {
		comp[c.Bit] = c.Data
	}
	l, err := cpu.HostLayout()
	if err != nil {
		t.Fatal(err)
	}
	x, err := l.Build(xs.CPU(d.ck.Inventory.CPU.XFeatures))
	if err != nil {
		t.Fatal(err)
	}
	for _, bit := range []uint{2, 5, 6, 7} {
		c := l.Component(bit)
		if c == nil || len(comp[bit]) != c.Size || string(x[c.Offset:c.Offset+c.Size]) != string(comp[bit]) {
			t.Fatalf("%s: %d bytes in the image, layout %+v", cpu.ComponentName(bit), len(comp[bit]), c)
		}
	}
	legacy := xs.Legacy
	const offXMM = 160          // legacy region: xmm0-15, 16 bytes each
	zmm := func(i int) []byte { // the fixture's pattern for zmm i
		b := make([]byte, 64)
		for w := 0; w < 8; w++ {
			le.PutUint64(b[8*w:], 0x0101010101010101*uint64(i+1)^uint64(w)*0x9E3779B97F4A7C15)
		}
		return b
	}
	for i := 0; i < 32; i++ {
		want := zmm(i)
		var got []byte
		if i < 16 {
			got = append(got, legacy[offXMM+16*i:offXMM+16*i+16]...)
			got = append(got, comp[cpu.XFeatAVX][16*i:16*i+16]...)
			got = append(got, comp[cpu.XFeatZMMHi256][32*i:32*i+32]...)
		} else {
			got = comp[cpu.XFeatHi16ZMM][64*(i-16) : 64*(i-15)]
		}
		if string(got) != string(want) {
			t.Errorf("zmm%d in the xstate = %x, want %x", i, got, want)
		}
	}
	if le.Uint64(want0(t, d)) != le.Uint64(zmm(0)) {
		t.Errorf("READY zmm0 %#x does not match the expected pattern", d.p.HexInfo(t, "zmm0"))
	}
	if k1 := le.Uint64(comp[cpu.XFeatOpmask][8:]); k1 != d.p.HexInfo(t, "k1") {
		t.Errorf("k1 = %#x, want %#x", k1, d.p.HexInfo(t, "k1"))
	}
	if mx := le.Uint32(legacy[24:]); uint64(mx) != d.p.HexInfo(t, "mxcsr") {
		t.Errorf("mxcsr = %#x, want %s", mx, d.p.Info["mxcsr"])
	}
	if fcw := le.Uint16(legacy[0:]); uint64(fcw) != d.p.HexInfo(t, "fcw") {
		t.Errorf("fcw = %#x, want %s", fcw, d.p.Info["fcw"])
	}
	d.p.Check(t)
}

func want0(t *testing.T, d *img) []byte {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint64(b, d.p.HexInfo(t, "zmm0"))
	return b
}

func TestDumpFiles(t *testing.T) {
	t.Parallel()
	d := dumpFixture(t, "files", nil)
	files := map[int]image.File{}
	for _, f := range d.ck.Files {
		files[f.ID] = f
	}
	fds := map[int]image.Fd{}
	var nums []int
	for _, fd := range d.proc.Fds {
		fds[fd.Fd] = fd
		nums = append(nums, fd.Fd)
	}
	// 0-2 plus the fixture's nine.
	if len(fds) != 12 {
		t.Errorf("image fds %v, want 12", nums)
	}
	const flmask = unix.O_ACCMODE | unix.O_APPEND | unix.O_NONBLOCK
	type want struct {
		key     string
		path    string
		flags   int
		pos     int64 // -1: not checked
		cloexec bool
		typ     string
	}
	dir := d.p.Dir
	for _, w := range []want{
		{"fd_a", dir + "/a.txt", unix.O_RDWR, 123, false, image.FileReg},
		{"fd_b", dir + "/b.txt", unix.O_WRONLY | unix.O_APPEND, 50, false, image.FileReg},
		{"fd_c", dir + "/c.txt", unix.O_RDONLY, 77, false, image.FileReg},
		{"fd_dir", dir, unix.O_RDONLY, -1, false, image.FileDir},
		{"fd_null", "/dev/null", unix.O_RDWR | unix.O_NONBLOCK, -1, false, image.FileChr},
		{"fd_zero", "/dev/zero", unix.O_RDONLY, -1, true, image.FileChr},
		{"fd_urandom", "/dev/urandom", unix.O_RDONLY, -1, true, image.FileChr},
		{"fd_dup", dir + "/a.txt", unix.O_RDWR, 123, false, image.FileReg},
		{"fd_c42", dir + "/c.txt", unix.O_RDONLY, 77, false, image.FileReg},
	} {
		n := d.p.IntInfo(t, w.key)
		fd, ok := fds[n]
		if !ok {
			t.Errorf("%s: fd %d missing from the image", w.key, n)
			continue
		}
		f, ok := files[fd.FileID]
		if !ok {
			t.Errorf("%s: fd %d refers to unknown file id %d", w.key, n, fd.FileID)
			continue
		}
		if f.Ident.Path != w.path || f.Type != w.typ || int(f.Flags)&flmask != w.flags || fd.Cloexec != w.cloexec ||
			(w.pos >= 0 && f.Pos != w.pos) {
			t.Errorf("%s (fd %d): %+v cloexec=%v; want %s %s flags %#o pos %d cloexec=%v",
				w.key, n, f, fd.Cloexec, w.path, w.typ, w.flags, w.pos, w.cloexec)
		}
		var st unix.Stat_t
		if err := unix.Stat(w.path, &st); err == nil && (f.Ident.Ino != st.Ino || f.Ident.Dev != st.Dev) {
			t.Errorf("%s: identity %d:%d, file is %d:%d", w.key, f.Ident.Dev, f.Ident.Ino, st.Dev, st.Ino)
		}
		if w.typ == image.FileChr && f.Rdev == 0 {
			t.Errorf("%s: no rdev", w.key)
		}
	}
	if n := d.p.IntInfo(t, "fd_c42"); n != 42 {
		t.Errorf("fd_c42 = %d", n)
	}
	id := func(key string) int { return fds[d.p.IntInfo(t, key)].FileID }
	if id("fd_a") != id("fd_dup") {
		t.Errorf("the dup of a.txt has file id %d, a.txt %d", id("fd_dup"), id("fd_a"))
	}
	if id("fd_c") != id("fd_c42") {
		t.Errorf("fd 42 has file id %d, c.txt %d", id("fd_c42"), id("fd_c"))
	}
	if id("fd_a") == id("fd_b") || id("fd_a") == id("fd_c") {
		t.Errorf("distinct files share an id")
	}
	if fds[1].FileID != fds[2].FileID {
		t.Errorf("stdout and stderr (one description) have file ids %d and %d", fds[1].FileID, fds[2].FileID)
	}
	if len(d.ck.Files) != 9 { // 0, 1=2, a=dup, b, c=42, dir, null, zero, urandom
		t.Errorf("%d file descriptions, want 9", len(d.ck.Files))
	}
	if got := d.proc.FS.Cwd.Path; got != d.p.Info["cwd"] {
		t.Errorf("cwd %q, want %q", got, d.p.Info["cwd"])
	}
	if d.proc.FS.Root.Path != "/" {
		t.Errorf("root %q", d.proc.FS.Root.Path)
	}
	task := &d.proc.Task
	if task.Umask != 0o27 {
		t.Errorf("umask %#o, want 027", task.Umask)
	}
	lim := map[string]image.Rlimit{}
	for _, r := range task.Rlimits {
		lim[r.Name] = r
	}
	if len(lim) != 16 {
		t.Errorf("%d rlimits in the task record", len(lim))
	}
	if r := lim["nofile"]; r.Resource != unix.RLIMIT_NOFILE || r.Cur != 1000 || r.Max != d.p.HexInfo(t, "nofile_max") {
		t.Errorf("nofile rlimit %+v", r)
	}
	if r := lim["core"]; r.Resource != unix.RLIMIT_CORE || r.Cur != 0 {
		t.Errorf("core rlimit %+v", r)
	}
	if task.Pid != d.p.Pid || task.Ppid != os.Getpid() || task.Sid != d.p.Pid || task.Pgid != d.p.Pid || !strings.HasPrefix(task.Comm, "files") {
		t.Errorf("task %d ppid %d sid %d pgid %d comm %q", task.Pid, task.Ppid, task.Sid, task.Pgid, task.Comm)
	}
	if task.Creds.Uid != [4]uint32{} || task.Creds.Gid != [4]uint32{} {
		t.Errorf("creds %+v", task.Creds)
	}
	d.p.Check(t)
}

func TestDumpSignals(t *testing.T) {
	t.Parallel()
	d := dumpFixture(t, "signals", nil)
	const (
		saSiginfo   = 0x4
		saRestorer  = 0x04000000
		saRestart   = 0x10000000
		saNodefer   = 0x40000000
		saResethand = 0x80000000
	)
	acts := map[int]image.Sigaction{}
	for _, a := range d.proc.Task.Sigactions {
		acts[a.Sig] = a
	}
	if len(acts) != 62 || len(d.proc.Task.Sigactions) != 62 {
		t.Errorf("%d sigactions, want 62 (1..64 but SIGKILL and SIGSTOP)", len(d.proc.Task.Sigactions))
	}
	bit := func(sigs ...unix.Signal) uint64 {
		var m uint64
		for _, s := range sigs {
			m |= 1 << (uint(s) - 1)
		}
		return m
	}
	rtmin := unix.Signal(d.p.IntInfo(t, "sigrtmin"))
	for _, w := range []struct {
		sig     unix.Signal
		handler uint64
		flags   uint64
		mask    uint64
	}{
		{unix.SIGUSR1, d.p.HexInfo(t, "on_usr1"), saRestart, 0},
		{unix.SIGHUP, d.p.HexInfo(t, "on_hup"), saSiginfo | saNodefer, bit(unix.SIGINT)},
		{unix.SIGALRM, d.p.HexInfo(t, "on_alrm"), saResethand, bit(unix.SIGQUIT, rtmin+5)},
		{unix.SIGPIPE, 1, 0, 0}, // SIG_IGN
		{unix.SIGTERM, 0, 0, 0}, // SIG_DFL
		{unix.SIGINT, 0, 0, 0},
	} {
		a, ok := acts[int(w.sig)]
		if !ok {
			t.Errorf("signal %d missing", w.sig)
			continue
		}
		if a.Handler != w.handler || a.Flags&^saRestorer != w.flags || a.Mask != w.mask {
			t.Errorf("signal %d (%v): handler %#x flags %#x mask %#x; want %#x %#x %#x",
				w.sig, w.sig, a.Handler, a.Flags, a.Mask, w.handler, w.flags, w.mask)
		}
		if a.Handler > 1 && (a.Flags&saRestorer == 0 || a.Restorer == 0) {
			t.Errorf("signal %d: handler without restorer: %+v", w.sig, a)
		}
	}
	blocked := d.p.IntsInfo(t, "blocked")
	if len(blocked) != 2 || blocked[0] != 28 || blocked[1] != 37 {
		t.Fatalf("READY blocked=%v", blocked)
	}
	// Signal n is bit n-1: SIGWINCH (28) is bit 27, SIGRTMIN+3 (37) bit 36.
	want := uint64(1)<<27 | uint64(1)<<36
	if got := d.proc.Threads[0].Sigmask; got != want {
		t.Errorf("blocked mask %#x, want %#x (SIGWINCH, SIGRTMIN+3)", got, want)
	}
	d.p.Check(t)
}

func TestDumpSeed(t *testing.T) {
	t.Parallel()
	d := dumpFixture(t, "seed", nil)
	n := d.p.IntInfo(t, "fd")
	var fd *image.Fd
	for i := range d.proc.Fds {
		if d.proc.Fds[i].Fd == n {
			fd = &d.proc.Fds[i]
		}
	}
	if fd == nil {
		t.Fatalf("fd %d of hello.txt not in the image", n)
	}
	for _, f := range d.ck.Files {
		if f.ID == fd.FileID {
			if f.Ident.Path != filepath.Join(d.p.Dir, "hello.txt") || f.Pos != int64(len("hello, world!\n")) || f.Flags&unix.O_ACCMODE != unix.O_RDWR {
				t.Errorf("hello.txt: %+v", f)
			}
		}
	}
	// The stdio buffer of the FILE lives in the heap: it must be saved.
	heapSaved := false
	for _, v := range d.proc.VMAs {
		if v.Special == image.SpecialHeap && len(d.savedIn(v.Start, v.End)) > 0 {
			heapSaved = true
		}
	}
	if !heapSaved {
		t.Errorf("no heap pages saved")
	}
	// The seed program finishes its job after the dump.
	d.p.Check(t)
	if ws := d.p.Wait(t, 5*time.Second); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("seed exit status %v; log:\n%s", ws, d.p.LogText())
	}
	if b, err := os.ReadFile(filepath.Join(d.p.Dir, "hello.txt")); err != nil || string(b) != "hello, world!\nworld, hello!\n" {
		t.Errorf("hello.txt = %q, %v", b, err)
	}
}

// The counter stays alive with LeaveRunning; its count keeps going.
func TestDumpLeaveRunning(t *testing.T) {
	t.Parallel()
	d := dumpFixture(t, "counter", nil)
	line := d.p.WaitLine(t, "count ", 2*time.Second)
	n1, _ := strconv.Atoi(strings.TrimPrefix(line, "count "))
	line = d.p.WaitLine(t, "count ", 2*time.Second)
	n2, _ := strconv.Atoi(strings.TrimPrefix(line, "count "))
	if n2 <= n1 {
		t.Errorf("count %d then %d after the dump", n1, n2)
	}
	c1 := d.p.Check(t)
	if c2 := d.p.Check(t); c2 <= c1 {
		t.Errorf("counter %d then %d", c1, c2)
	}
	// The counter sleeps in nanosleep nearly all the time: the dump finds it
	// there (-ERESTART_RESTARTBLOCK), and the saved registers make the
	// syscall return EINTR on restore.
	th := d.proc.Threads[0]
	if s := th.Syscall; s == nil {
		t.Logf("thread was not in a syscall (rare)")
	} else if s.Nr != unix.SYS_CLOCK_NANOSLEEP && s.Nr != unix.SYS_NANOSLEEP || s.Action != "eintr" || s.Result != -516 ||
		int64(th.Regs.Rax) != -int64(unix.EINTR) || th.Regs.OrigRax != ^uint64(0) {
		t.Errorf("in syscall %+v, rax %#x orig_rax %#x; want nanosleep normalised to EINTR", s, th.Regs.Rax, th.Regs.OrigRax)
	}
}

// Without LeaveRunning the target is killed once the image is complete.
func TestDumpKills(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "counter"))
	dir := filepath.Join(t.TempDir(), "img")
	res, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if p.Alive() {
		t.Fatalf("pid %d still alive after a dump without LeaveRunning", p.Pid)
	}
	// The dumper was the tracer and the test process the parent: the
	// process must be reaped, not left as a zombie.
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", p.Pid)); err == nil {
		if _, err := testutil.Reap(p.Pid, time.Second); err != nil {
			t.Errorf("pid %d lingers: %v", p.Pid, err)
		}
	}
	ck, err := image.Load(res.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if ck.Inventory.Options.LeaveRunning {
		t.Error("inventory says leave_running")
	}
	if err := image.VerifyPages(res.Dir, ck.Processes[0]); err != nil {
		t.Fatal(err)
	}
}
