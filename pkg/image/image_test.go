package image_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cr-tools/cr/pkg/image"
	"github.com/stretchr/testify/require"
)

const testPid = 4242

// ---------------------------------------------------------------------------
// Fixtures

func exeIdent() image.FileIdent {
	return image.FileIdent{Path: "/usr/bin/demo", Dev: 0x10303, Ino: 1311027, Size: 14328, MtimeNs: 1735787045123456789, Mode: 0o100755}
}

// testXState returns a plausible per-component XSAVE state: x87, SSE and
// AVX in use, random register contents.
func testXState(r *rand.Rand) *image.XState {
	rnd := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.UintN(256))
		}
		return b
	}
	return &image.XState{XStateBV: 7, Legacy: rnd(512), Components: []image.XStateComponent{{Bit: 2, Data: rnd(256)}}}
}

// testCheckpoint builds a realistic one-process checkpoint: a task, two
// threads (one stopped in a syscall), an mm, file-backed, anonymous, shared
// and special VMAs, three page runs (their Offset and CRC are filled in by
// writeImage), fds sharing one open file description, and cwd/root.
func testCheckpoint() *image.Checkpoint {
	r := rand.New(rand.NewChaCha8([32]byte{1, 2, 3}))
	exe := exeIdent()
	shm := image.FileIdent{Path: "/dev/shm/demo", Dev: 0x19, Ino: 7, Size: 4096, MtimeNs: 1735787000000000001, Mode: 0o100600}
	regs := func(rip, rsp uint64) image.Regs {
		return image.Regs{
			R15: 0, R14: 0x7ffff7ffd000, R13: 0x7fffffffe2c8, R12: 1, Rbp: 0x7fffffffe1a0, Rbx: 0x7fffffffe2b8,
			R11: 0x246, R10: 8, R9: 0x7ffff7fca380, R8: 0, Rax: 0xfffffffffffffe00, Rcx: rip - 2, Rdx: 0,
			Rsi: 0x7fffffffe0f0, Rdi: 3, OrigRax: 7, Rip: rip, Cs: 0x33, Eflags: 0x246, Rsp: rsp, Ss: 0x2b,
			FsBase: 0x7ffff7d8a740, GsBase: 0, Ds: 0, Es: 0, Fs: 0, Gs: 0,
		}
	}
	p := &image.Process{
		Task: image.Task{
			Pid: testPid, Ppid: 1, Pgid: testPid, Sid: 4200, Comm: "demo",
			Creds: image.Creds{Uid: [4]uint32{1000, 1000, 1000, 1000}, Gid: [4]uint32{1000, 1000, 1000, 1000}, Groups: []uint32{27, 1000}},
			Umask: 0o022,
			Rlimits: []image.Rlimit{
				{Resource: 3, Name: "stack", Cur: 8 << 20, Max: ^uint64(0)},
				{Resource: 7, Name: "nofile", Cur: 1024, Max: 524288},
			},
			Sigactions: []image.Sigaction{
				{Sig: 2, Handler: 0x555555556789, Flags: 0x04000004, Restorer: 0x7ffff7c42520, Mask: 1 << 14},
				{Sig: 13, Handler: 1},
				{Sig: 17, Handler: 0},
			},
		},
		Threads: []image.Thread{
			{Tid: testPid, Regs: regs(0x7ffff7e9a7e2, 0x7fffffffe0e8), XState: testXState(r), Sigmask: 0,
				Syscall: &image.InSyscall{Nr: 7, Result: -516, Action: "restart"}},
			{Tid: testPid + 1, Regs: regs(0x555555556a10, 0x7ffff75ffe70), XState: testXState(r), Sigmask: 1 << 1,
				ClearChildTid: 0x7ffff75ff990, Rseq: &image.Rseq{Ptr: 0x7ffff75ffe00, Size: 32, Signature: 0x53053053}},
		},
		MM: image.MM{
			StartCode: 0x555555556000, EndCode: 0x555555557f2d, StartData: 0x555555559d10, EndData: 0x55555555a010,
			StartBrk: 0x55555555a000, Brk: 0x55555557b000, StartStack: 0x7fffffffe1b0,
			ArgStart: 0x7fffffffe5a1, ArgEnd: 0x7fffffffe5ae, EnvStart: 0x7fffffffe5ae, EnvEnd: 0x7fffffffefe5,
			Auxv: []uint64{33, 0x7ffff7fc5000, 6, 4096, 3, 0x555555554040, 9, 0x555555556040, 0, 0},
			Exe:  exe,
		},
		VMAs: []image.VMA{
			{Start: 0x555555554000, End: 0x555555556000, Prot: "r", Pgoff: 0, File: &exe, VmFlags: []string{"rd", "mr", "mw", "me", "dw"}},
			{Start: 0x555555556000, End: 0x555555558000, Prot: "rx", Pgoff: 0x2000, File: &exe, VmFlags: []string{"rd", "ex", "mr", "mw", "me", "dw"}},
			{Start: 0x555555559000, End: 0x55555555a000, Prot: "rw", Pgoff: 0x4000, File: &exe, VmFlags: []string{"rd", "wr", "mr", "mw", "me", "dw", "ac"}},
			{Start: 0x55555555a000, End: 0x55555557b000, Prot: "rw", Special: image.SpecialHeap, VmFlags: []string{"rd", "wr", "mr", "mw", "me", "ac"}},
			{Start: 0x7ffff7fc1000, End: 0x7ffff7fc5000, Prot: "r", Special: image.SpecialVvar, VmFlags: []string{"rd", "mr", "pf", "io", "de", "dd"}},
			{Start: 0x7ffff7fc5000, End: 0x7ffff7fc7000, Prot: "rx", Special: image.SpecialVdso, VmFlags: []string{"rd", "ex", "mr", "mw", "me", "de"}},
			{Start: 0x7ffff7fc7000, End: 0x7ffff7fc8000, Prot: "rw", Flags: []string{image.VMAShared}, File: &shm, VmFlags: []string{"rd", "wr", "sh", "mr", "mw", "me", "ms"}},
			{Start: 0x7ffffffde000, End: 0x7ffffffff000, Prot: "rw", Flags: []string{image.VMAGrowsDown}, Special: image.SpecialStack, VmFlags: []string{"rd", "wr", "mr", "mw", "me", "gd", "ac"}},
		},
		PageMap: []image.PageRun{
			{Addr: 0x555555559000, Pages: 1, Offset: image.PageSize},     // private file page that was written
			{Addr: 0x55555555a000, Pages: 3, Offset: 2 * image.PageSize}, // heap
			{Addr: 0x7fffffffc000, Pages: 2, Offset: 5 * image.PageSize}, // stack
		},
		Fds: []image.Fd{
			{Fd: 0, FileID: 1}, {Fd: 1, FileID: 1}, {Fd: 2, FileID: 1},
			{Fd: 3, FileID: 2, Cloexec: true},
			{Fd: 4, FileID: 3, Cloexec: true},
		},
		FS: image.FS{
			Cwd:  image.FileIdent{Path: "/home/user", Dev: 0x10303, Ino: 393217, Size: 4096, MtimeNs: 1735787001000000000, Mode: 0o40755},
			Root: image.FileIdent{Path: "/", Dev: 0x10303, Ino: 2, Size: 4096, MtimeNs: 1735000000000000000, Mode: 0o40755},
		},
	}
	return &image.Checkpoint{
		Inventory: image.Inventory{
			FormatMajor: image.FormatMajor, FormatMinor: image.FormatMinor,
			CRVersion: "0.1.0-test", DumpTime: "2025-01-02T03:04:05.123456789Z",
			Options: image.Options{LeaveRunning: true},
			Kernel:  image.Kernel{Sysname: "Linux", Release: "6.18.0", Version: "#1 SMP PREEMPT_DYNAMIC", Machine: "x86_64"},
			CPU: image.CPU{Arch: "x86_64", XFeatures: 7, XSaveSize: 832, Vendor: "GenuineIntel",
				XSaveLayout: []image.XComponent{{Bit: 2, Offset: 576, Size: 256}},
				CPUID:       []image.CPUIDLeaf{{Leaf: 1, EAX: 0x806f8, ECX: 0x7ffefbff, EDX: 0xbfebfbff}, {Leaf: 7, EBX: 0xf1bf07ab}}},
			RootPid: testPid, Pids: []int{testPid},
		},
		Processes: []*image.Process{p},
		Files: []image.File{
			{ID: 1, Type: image.FileChr, Flags: 0o100002, Pos: 0, Rdev: 0x8800,
				Ident: image.FileIdent{Path: "/dev/pts/0", Dev: 0x18, Ino: 3, Mode: 0o20620, MtimeNs: 1735787045000000000}},
			{ID: 2, Type: image.FileReg, Flags: 0o102001, Pos: 1234,
				Ident: image.FileIdent{Path: "/home/user/demo.log", Dev: 0x10303, Ino: 393300, Size: 1234, MtimeNs: 1735787044999999999, Mode: 0o100644}},
			{ID: 3, Type: image.FileDir, Flags: 0o300000, // O_RDONLY|O_DIRECTORY|O_LARGEFILE (O_CLOEXEC is in Fd.Cloexec)
				Ident: image.FileIdent{Path: "/home/user", Dev: 0x10303, Ino: 393217, Size: 4096, MtimeNs: 1735787001000000000, Mode: 0o40755}},
		},
	}
}

// writeImage writes c into a new image directory dir, with random page
// contents for every page run (filling in the runs' Offset and CRC), and
// returns the page bytes of each process.
func writeImage(t testing.TB, dir string, c *image.Checkpoint) map[int][]byte {
	t.Helper()
	r := rand.New(rand.NewChaCha8([32]byte{4, 5, 6}))
	w, err := image.Create(dir, false)
	require.NoError(t, err)
	pages := map[int][]byte{}
	for _, p := range c.Processes {
		pw, err := w.Pages(p.Task.Pid)
		require.NoError(t, err)
		require.EqualValues(t, image.PageSize, pw.Offset())
		var all []byte
		for i := range p.PageMap {
			run := &p.PageMap[i]
			run.Offset = uint64(pw.Offset())
			// Write page by page, computing the CRC incrementally.
			for j := uint64(0); j < run.Pages; j++ {
				page := make([]byte, image.PageSize)
				for k := range page {
					page[k] = byte(r.UintN(256))
				}
				if j == 0 {
					run.CRC = image.CRC(page)
				} else {
					run.CRC = image.UpdateCRC(run.CRC, page)
				}
				require.NoError(t, pw.Write(page))
				all = append(all, page...)
			}
		}
		pages[p.Task.Pid] = all
	}
	require.NoError(t, w.WriteMeta(c))
	require.NoError(t, w.Commit())
	return pages
}

// newImage writes the test checkpoint into a fresh directory.
func newImage(t testing.TB) (dir string, c *image.Checkpoint, pages map[int][]byte) {
	t.Helper()
	c = testCheckpoint()
	dir = filepath.Join(t.TempDir(), "img")
	pages = writeImage(t, dir, c)
	return dir, c, pages
}

// loadAll loads the image and verifies the pages of every process, turning a
// panic into an error so that a failing case is reported with its context.
func loadAll(dir string) (c *image.Checkpoint, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("PANIC: %v", r)
			c = nil
		}
	}()
	c, err = image.Load(dir)
	if err != nil {
		return nil, err
	}
	for _, p := range c.Processes {
		if err := image.VerifyPages(dir, p); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func metaFiles() []string {
	return []string{
		image.InventoryFile, image.FilesFile,
		image.CoreFile(testPid), image.MMFile(testPid), image.PageMapFile(testPid), image.FdsFile(testPid),
	}
}

func metaKinds() map[string]image.Kind {
	return map[string]image.Kind{
		image.InventoryFile: image.KindInventory, image.FilesFile: image.KindFiles,
		image.CoreFile(testPid): image.KindCore, image.MMFile(testPid): image.KindMM,
		image.PageMapFile(testPid): image.KindPageMap, image.FdsFile(testPid): image.KindFds,
	}
}

// rec is one record for frame.
type rec struct {
	tag     image.Tag
	payload []byte
}

// frame is an independent implementation of the file format as docs/IMAGE.md
// specifies it: header, records, END record.
func frame(kind image.Kind, major, minor byte, recs ...rec) []byte {
	b := make([]byte, 16)
	copy(b, "CRIMAGE\n")
	binary.LittleEndian.PutUint16(b[8:], uint16(kind))
	b[10], b[11] = major, minor
	binary.LittleEndian.PutUint32(b[12:], image.CRC(b[:12]))
	put := func(tag image.Tag, payload []byte) {
		start := len(b)
		b = binary.LittleEndian.AppendUint32(b, uint32(tag))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(payload)))
		b = append(b, payload...)
		b = binary.LittleEndian.AppendUint32(b, image.CRC(b[start:]))
	}
	for _, r := range recs {
		put(r.tag, r.payload)
	}
	put(image.TagEnd, binary.LittleEndian.AppendUint64(nil, uint64(len(recs))))
	return b
}

func readRecs(t testing.TB, dir, name string, kind image.Kind) []rec {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, name))
	require.NoError(t, err)
	rs, err := image.Decode(name, data, kind)
	require.NoError(t, err)
	var out []rec
	for _, r := range rs {
		out = append(out, rec{r.Tag, slices.Clone(r.Payload)})
	}
	return out
}

// jsonMap decodes a payload into a map, keeping 64-bit integers exact.
func jsonMap(t testing.TB, b []byte) map[string]any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var m map[string]any
	require.NoError(t, d.Decode(&m))
	return m
}

func requireFormatError(t testing.TB, err error, file string, msgAndArgs ...any) *image.FormatError {
	t.Helper()
	require.Error(t, err, msgAndArgs...)
	require.NotContains(t, err.Error(), "PANIC", msgAndArgs...)
	var fe *image.FormatError
	require.ErrorAs(t, err, &fe, msgAndArgs...)
	if file != "" {
		require.Equal(t, file, fe.File, msgAndArgs...)
	}
	return fe
}

// ---------------------------------------------------------------------------
// Round trip

func TestRoundTrip(t *testing.T) {
	dir, want, pages := newImage(t)

	got, err := image.Load(dir)
	require.NoError(t, err)
	require.Equal(t, want, got)
	require.NoError(t, image.VerifyPages(dir, got.Processes[0]))

	// The pages file is the header page followed by the runs, contiguous.
	data, err := os.ReadFile(filepath.Join(dir, image.PagesFile(testPid)))
	require.NoError(t, err)
	require.Len(t, data, image.PageSize*(1+1+3+2))
	require.Equal(t, pages[testPid], data[image.PageSize:])
	require.Equal(t, []byte("CRIMAGE\n"), data[:8])
	require.EqualValues(t, image.KindPages, binary.LittleEndian.Uint16(data[8:]))
	require.Equal(t, make([]byte, image.PageSize-16), data[16:image.PageSize])
	for _, r := range got.Processes[0].PageMap {
		require.Zero(t, r.Offset%image.PageSize)
		require.Equal(t, r.CRC, image.CRC(data[r.Offset:r.Offset+r.Pages*image.PageSize]))
	}

	// Exactly the expected files, nothing else.
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	wantNames := append(metaFiles(), image.PagesFile(testPid))
	slices.Sort(wantNames)
	require.Equal(t, wantNames, names)

	// The Writer's framing matches the specification byte for byte.
	for name, kind := range metaKinds() {
		data, err := os.ReadFile(filepath.Join(dir, name))
		require.NoError(t, err)
		require.Equal(t, frame(kind, image.FormatMajor, image.FormatMinor, readRecs(t, dir, name, kind)...), data, name)
	}

	// Record payloads use the documented JSON field names.
	inv := readRecs(t, dir, image.InventoryFile, image.KindInventory)
	require.Len(t, inv, 1)
	require.Equal(t, image.TagInventory, inv[0].tag)
	var m map[string]any
	require.NoError(t, json.Unmarshal(inv[0].payload, &m))
	for _, k := range []string{"format_major", "format_minor", "cr_version", "dump_time", "options", "kernel", "cpu", "root_pid", "pids"} {
		require.Contains(t, m, k)
	}
	pm := readRecs(t, dir, image.PageMapFile(testPid), image.KindPageMap)
	require.Len(t, pm, 3)
	require.NoError(t, json.Unmarshal(pm[0].payload, &m))
	require.Contains(t, m, "crc32c")

	// Thread order, tags and counts per file.
	core := readRecs(t, dir, image.CoreFile(testPid), image.KindCore)
	require.Len(t, core, 3)
	require.Equal(t, []image.Tag{image.TagTask, image.TagThread, image.TagThread}, []image.Tag{core[0].tag, core[1].tag, core[2].tag})
	fds := readRecs(t, dir, image.FdsFile(testPid), image.KindFds)
	require.Len(t, fds, 1+5)
	require.Equal(t, image.TagFS, fds[0].tag)
}

func TestShow(t *testing.T) {
	dir, want, _ := newImage(t)
	c, err := image.Load(dir)
	require.NoError(t, err)

	var sum bytes.Buffer
	image.WriteSummary(&sum, c)
	s := sum.String()
	require.Contains(t, s, fmt.Sprintf("process %d (demo)", testPid))
	require.Contains(t, s, "555555554000-555555556000")
	require.Contains(t, s, "/usr/bin/demo")
	require.Contains(t, s, "[vdso]")
	require.Contains(t, s, "[vvar]")
	require.Contains(t, s, "6 pages saved")
	require.Contains(t, s, "in syscall 7: restart")
	require.Contains(t, s, "xsave components (offset+size): x87 0+160, sse 160+256, avx 576+256")
	require.Regexp(t, `cpu features: .*\bsse2\b.*\bavx2\b`, s)

	var js bytes.Buffer
	require.NoError(t, image.WriteJSON(&js, c))
	require.Contains(t, js.String(), fmt.Sprintf(`"pid": %d`, testPid))
	require.Contains(t, js.String(), fmt.Sprintf(`"start": %d`, uint64(0x555555554000)))
	var back image.Checkpoint
	require.NoError(t, json.Unmarshal(js.Bytes(), &back))
	require.Equal(t, want, &back)
}

// ---------------------------------------------------------------------------
// Atomic creation

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestCreateAtomic(t *testing.T) {
	t.Run("non-empty dir", func(t *testing.T) {
		parent := t.TempDir()
		dir := filepath.Join(parent, "img")
		require.NoError(t, os.Mkdir(dir, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "x"), nil, 0o644))
		_, err := image.Create(dir, false)
		require.ErrorContains(t, err, "not empty")
		require.ElementsMatch(t, []string{"img"}, listDir(t, parent))
		require.Equal(t, []string{"x"}, listDir(t, dir))
	})

	t.Run("not a directory", func(t *testing.T) {
		parent := t.TempDir()
		dir := filepath.Join(parent, "img")
		require.NoError(t, os.WriteFile(dir, nil, 0o644))
		_, err := image.Create(dir, false)
		require.Error(t, err)
		require.Equal(t, []string{"img"}, listDir(t, parent))
	})

	t.Run("abort", func(t *testing.T) {
		parent := t.TempDir()
		dir := filepath.Join(parent, "img")
		w, err := image.Create(dir, true)
		require.NoError(t, err)
		require.Equal(t, parent, filepath.Dir(w.TempDir()))
		require.True(t, strings.HasPrefix(filepath.Base(w.TempDir()), "."), w.TempDir())
		pw, err := w.Pages(testPid)
		require.NoError(t, err)
		require.NoError(t, pw.Write(make([]byte, 6*image.PageSize)))
		require.Error(t, pw.Write(make([]byte, 100)), "partial page")
		require.NoError(t, w.WriteMeta(testCheckpoint()))
		_, err = os.Stat(dir)
		require.ErrorIs(t, err, os.ErrNotExist, "the image must not appear before Commit")
		w.Abort()
		require.Empty(t, listDir(t, parent))
	})

	t.Run("abort keeps an existing empty dir", func(t *testing.T) {
		parent := t.TempDir()
		dir := filepath.Join(parent, "img")
		require.NoError(t, os.Mkdir(dir, 0o755))
		w, err := image.Create(dir, false)
		require.NoError(t, err)
		require.NoError(t, w.WriteMeta(testCheckpoint()))
		w.Abort()
		require.Equal(t, []string{"img"}, listDir(t, parent))
		require.Empty(t, listDir(t, dir))
	})

	for _, sync := range []bool{false, true} {
		t.Run(fmt.Sprintf("commit sync=%v", sync), func(t *testing.T) {
			parent := t.TempDir()
			dir := filepath.Join(parent, "img")
			require.NoError(t, os.Mkdir(dir, 0o755)) // an empty target is allowed
			c := testCheckpoint()
			c.Processes[0].PageMap = nil
			w, err := image.Create(dir, sync)
			require.NoError(t, err)
			_, err = w.Pages(testPid)
			require.NoError(t, err)
			require.NoError(t, w.WriteMeta(c))
			require.NoError(t, w.Commit())
			require.Equal(t, []string{"img"}, listDir(t, parent), "no temporary directory left")

			st, err := os.Stat(dir)
			require.NoError(t, err)
			require.True(t, st.IsDir())
			require.Equal(t, os.FileMode(0o700), st.Mode().Perm())
			ents, err := os.ReadDir(dir)
			require.NoError(t, err)
			require.Len(t, ents, 7)
			for _, e := range ents {
				info, err := e.Info()
				require.NoError(t, err)
				require.True(t, info.Mode().IsRegular(), e.Name())
				require.Equal(t, os.FileMode(0o600), info.Mode().Perm(), e.Name())
			}
			got, err := loadAll(dir)
			require.NoError(t, err)
			require.Equal(t, c, got)

			_, err = image.Create(dir, sync)
			require.Error(t, err, "the committed image is not empty")
		})
	}
}

// ---------------------------------------------------------------------------
// Corruption

// tamperPositions returns the byte offsets to corrupt in a file: all of them
// for files under 4 KiB; for bigger ones the header, every record's header,
// the start and end of every payload, every CRC, the END record and a
// stride through the rest.
func tamperPositions(t *testing.T, name string, data []byte, kind image.Kind) []int {
	if len(data) < 4096 {
		pos := make([]int, len(data))
		for i := range pos {
			pos[i] = i
		}
		return pos
	}
	recs, err := image.Decode(name, data, kind)
	require.NoError(t, err)
	set := map[int]bool{}
	span := func(from, to int) {
		for i := max(from, 0); i < min(to, len(data)); i++ {
			set[i] = true
		}
	}
	span(0, 16)
	for _, r := range recs {
		o := int(r.Offset)
		n := len(r.Payload)
		span(o, o+8+16)        // record header and payload start
		span(o+8+n-8, o+8+n+4) // payload end and CRC
	}
	span(len(data)-20, len(data)) // END record
	for i := 0; i < len(data); i += 7 {
		set[i] = true
	}
	var pos []int
	for i := range set {
		pos = append(pos, i)
	}
	slices.Sort(pos)
	return pos
}

func TestTamperMetadata(t *testing.T) {
	for _, name := range metaFiles() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir, _, _ := newImage(t)
			path := filepath.Join(dir, name)
			orig, err := os.ReadFile(path)
			require.NoError(t, err)
			restore := func() { require.NoError(t, os.WriteFile(path, orig, 0o600)) }

			// Flip every byte (or a dense selection for big files).
			for _, i := range tamperPositions(t, name, orig, metaKinds()[name]) {
				b := slices.Clone(orig)
				b[i] ^= 0xff
				require.NoError(t, os.WriteFile(path, b, 0o600))
				_, err := loadAll(dir)
				requireFormatError(t, err, name, "byte %d of %d flipped", i, len(orig))
			}
			// Truncate at every length.
			step := 1
			if len(orig) >= 4096 {
				step = 3
			}
			for n := 0; n < len(orig); n += step {
				require.NoError(t, os.WriteFile(path, orig[:n], 0o600))
				_, err := loadAll(dir)
				requireFormatError(t, err, name, "truncated to %d of %d bytes", n, len(orig))
			}
			require.NoError(t, os.WriteFile(path, orig[:len(orig)-1], 0o600))
			_, err = loadAll(dir)
			requireFormatError(t, err, name, "last byte cut")
			// Trailing garbage after the END record.
			for _, extra := range [][]byte{{0}, []byte("x"), orig[16:]} {
				require.NoError(t, os.WriteFile(path, append(slices.Clone(orig), extra...), 0o600))
				_, err := loadAll(dir)
				fe := requireFormatError(t, err, name, "%d trailing bytes", len(extra))
				require.EqualValues(t, len(orig), fe.Offset)
			}
			// Missing file.
			require.NoError(t, os.Remove(path))
			_, err = loadAll(dir)
			require.ErrorContains(t, err, name)

			restore()
			_, err = loadAll(dir)
			require.NoError(t, err)
		})
	}
}

func TestTamperPages(t *testing.T) {
	t.Parallel()
	dir, c, _ := newImage(t)
	name := image.PagesFile(testPid)
	path := filepath.Join(dir, name)
	orig, err := os.ReadFile(path)
	require.NoError(t, err)
	runs := c.Processes[0].PageMap

	// Header page: the 16-byte header and the zero padding.
	for i := 0; i < image.PageSize; i++ {
		b := slices.Clone(orig)
		b[i] ^= 0xff
		require.NoError(t, os.WriteFile(path, b, 0o600))
		_, err := image.Load(dir)
		requireFormatError(t, err, name, "header byte %d flipped", i)
	}

	// Page contents: Load only checks sizes, VerifyPages catches the change
	// and names the run.
	for i := image.PageSize; i < len(orig); i += 61 {
		pos := []int{i}
		if i == image.PageSize {
			pos = nil
			for _, r := range runs { // first and last byte of every run
				pos = append(pos, int(r.Offset), int(r.Offset+r.Pages*image.PageSize-1))
			}
		}
		for _, p := range pos {
			b := slices.Clone(orig)
			b[p] ^= 0xff
			require.NoError(t, os.WriteFile(path, b, 0o600))
			got, err := image.Load(dir)
			require.NoError(t, err, "byte %d", p)
			err = image.VerifyPages(dir, got.Processes[0])
			requireFormatError(t, err, name, "byte %d flipped", p)
			var run image.PageRun
			for _, r := range runs {
				if uint64(p) >= r.Offset && uint64(p) < r.Offset+r.Pages*image.PageSize {
					run = r
				}
			}
			require.Contains(t, err.Error(), fmt.Sprintf("%#x", run.Addr))
		}
	}

	// Truncation (and growth) is caught by Load's size check.
	for n := 0; n < len(orig); n += 97 {
		require.NoError(t, os.WriteFile(path, orig[:n], 0o600))
		_, err := image.Load(dir)
		requireFormatError(t, err, name, "truncated to %d", n)
	}
	for _, n := range []int{image.PageSize - 1, image.PageSize, len(orig) - image.PageSize, len(orig) - 1} {
		require.NoError(t, os.WriteFile(path, orig[:n], 0o600))
		_, err := image.Load(dir)
		requireFormatError(t, err, name, "truncated to %d", n)
	}
	require.NoError(t, os.WriteFile(path, append(slices.Clone(orig), make([]byte, image.PageSize)...), 0o600))
	_, err = image.Load(dir)
	requireFormatError(t, err, name, "extra page")

	// A pages file cut after Load is caught by VerifyPages.
	require.NoError(t, os.WriteFile(path, orig, 0o600))
	got, err := image.Load(dir)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, orig[:len(orig)-1], 0o600))
	requireFormatError(t, image.VerifyPages(dir, got.Processes[0]), name, "cut after Load")

	require.NoError(t, os.WriteFile(path, orig, 0o600))
	_, err = loadAll(dir)
	require.NoError(t, err)
}

// TestWrongKind swaps files: every file's header names its kind.
func TestWrongKind(t *testing.T) {
	dir, _, _ := newImage(t)
	core, err := os.ReadFile(filepath.Join(dir, image.CoreFile(testPid)))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, image.MMFile(testPid)), core, 0o600))
	_, err = image.Load(dir)
	fe := requireFormatError(t, err, image.MMFile(testPid))
	require.EqualValues(t, 8, fe.Offset)
	require.Contains(t, err.Error(), "core")

	for _, kind := range []image.Kind{0, image.KindInventory, image.KindPages, 99} {
		_, err := image.Decode("x", core, kind)
		requireFormatError(t, err, "x")
	}
	_, err = image.Decode("x", core, image.KindCore)
	require.NoError(t, err)
}

// ---------------------------------------------------------------------------
// Versions

func TestVersion(t *testing.T) {
	setMajor := func(t *testing.T, dir, name string, major byte) {
		path := filepath.Join(dir, name)
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		b[10] = major
		binary.LittleEndian.PutUint32(b[12:], image.CRC(b[:12]))
		require.NoError(t, os.WriteFile(path, b, 0o600))
	}
	setJSONMajor := func(t *testing.T, dir string, major int) {
		path := filepath.Join(dir, image.InventoryFile)
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		recs := readRecs(t, dir, image.InventoryFile, image.KindInventory)
		inv := jsonMap(t, recs[0].payload)
		inv["format_major"] = major
		recs[0].payload, err = json.Marshal(inv)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(path, frame(image.KindInventory, b[10], b[11], recs...), 0o600))
	}
	check := func(t *testing.T, dir, file string) {
		_, err := image.Load(dir)
		require.Error(t, err)
		var ve *image.VersionError
		require.ErrorAs(t, err, &ve)
		require.Equal(t, 2, ve.Major)
		require.Equal(t, file, ve.File)
		require.Contains(t, err.Error(), fmt.Sprintf("version 2.%d", image.FormatMinor))
		require.Contains(t, err.Error(), "reads version 1.x")
	}

	t.Run("header and json", func(t *testing.T) {
		dir, _, _ := newImage(t)
		setJSONMajor(t, dir, 2)
		setMajor(t, dir, image.InventoryFile, 2)
		check(t, dir, image.InventoryFile)
	})
	t.Run("header", func(t *testing.T) {
		dir, _, _ := newImage(t)
		setMajor(t, dir, image.InventoryFile, 2)
		check(t, dir, image.InventoryFile)
	})
	t.Run("json", func(t *testing.T) {
		dir, _, _ := newImage(t)
		setJSONMajor(t, dir, 2)
		check(t, dir, image.InventoryFile)
	})
	t.Run("other file", func(t *testing.T) {
		dir, _, _ := newImage(t)
		setMajor(t, dir, image.MMFile(testPid), 2)
		check(t, dir, image.MMFile(testPid))
	})
	t.Run("pages file", func(t *testing.T) {
		dir, _, _ := newImage(t)
		setMajor(t, dir, image.PagesFile(testPid), 2)
		check(t, dir, image.PagesFile(testPid))
	})
	t.Run("newer minor with unknown fields", func(t *testing.T) {
		dir, want, _ := newImage(t)
		path := filepath.Join(dir, image.MMFile(testPid))
		recs := readRecs(t, dir, image.MMFile(testPid), image.KindMM)
		for i := range recs {
			m := jsonMap(t, recs[i].payload)
			m["added_in_1_7"] = map[string]any{"x": 1}
			var err error
			recs[i].payload, err = json.Marshal(m)
			require.NoError(t, err)
		}
		require.NoError(t, os.WriteFile(path, frame(image.KindMM, image.FormatMajor, 7, recs...), 0o600))
		got, err := loadAll(dir)
		require.NoError(t, err)
		require.Equal(t, want, got)
	})
}

// ---------------------------------------------------------------------------
// Limits and structure

func TestOversizedLength(t *testing.T) {
	hdr := frame(image.KindCore, image.FormatMajor, image.FormatMinor)[:16]
	for _, n := range []uint32{image.MaxRecord + 1, 1 << 31, ^uint32(0)} {
		data := slices.Clone(hdr)
		data = binary.LittleEndian.AppendUint32(data, uint32(image.TagTask))
		data = binary.LittleEndian.AppendUint32(data, n)
		data = append(data, `{"pid":1}`...)

		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		_, err := image.Decode("core-1.img", data, image.KindCore)
		runtime.ReadMemStats(&after)
		fe := requireFormatError(t, err, "core-1.img")
		require.EqualValues(t, 16, fe.Offset)
		require.Contains(t, err.Error(), "limit")
		require.Contains(t, err.Error(), fmt.Sprint(image.MaxRecord))
		require.Contains(t, err.Error(), fmt.Sprint(n))
		require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(1<<20), "allocated before checking the length")
	}

	// Exactly MaxRecord is allowed by the limit, so a short file is "cut short".
	data := slices.Clone(hdr)
	data = binary.LittleEndian.AppendUint32(data, uint32(image.TagTask))
	data = binary.LittleEndian.AppendUint32(data, image.MaxRecord)
	_, err := image.Decode("core-1.img", data, image.KindCore)
	requireFormatError(t, err, "core-1.img")
	require.Contains(t, err.Error(), "cut short")
	require.NotContains(t, err.Error(), "limit")

	// Through Load, in the inventory.
	dir, _, _ := newImage(t)
	inv := slices.Clone(hdr)
	inv[8] = byte(image.KindInventory)
	binary.LittleEndian.PutUint32(inv[12:], image.CRC(inv[:12]))
	inv = binary.LittleEndian.AppendUint32(inv, uint32(image.TagInventory))
	inv = binary.LittleEndian.AppendUint32(inv, image.MaxRecord+1)
	require.NoError(t, os.WriteFile(filepath.Join(dir, image.InventoryFile), inv, 0o600))
	_, err = image.Load(dir)
	requireFormatError(t, err, image.InventoryFile)
	require.Contains(t, err.Error(), "limit")
}

func TestEndRecord(t *testing.T) {
	task := rec{image.TagTask, []byte(`{"pid":1}`)}
	good := frame(image.KindCore, 1, 0, task, task)
	recs, err := image.Decode("c", good, image.KindCore)
	require.NoError(t, err)
	require.Len(t, recs, 2)
	require.EqualValues(t, 16, recs[0].Offset)
	require.EqualValues(t, 16+8+9+4, recs[1].Offset)

	// A file cut at a record boundary has no END record.
	_, err = image.Decode("c", good[:16+21], image.KindCore)
	requireFormatError(t, err, "c")

	// An END record with the wrong count (a record dropped at a boundary).
	bad := frame(image.KindCore, 1, 0, task, task)
	endAt := len(bad) - 20
	binary.LittleEndian.PutUint64(bad[endAt+8:], 1)
	binary.LittleEndian.PutUint32(bad[endAt+16:], image.CRC(bad[endAt:endAt+16]))
	_, err = image.Decode("c", bad, image.KindCore)
	requireFormatError(t, err, "c")
	require.Contains(t, err.Error(), "END")

	// An END record of the wrong size.
	b := frame(image.KindCore, 1, 0)[:16]
	b = binary.LittleEndian.AppendUint32(b, 0)
	b = binary.LittleEndian.AppendUint32(b, 4)
	b = append(b, 0, 0, 0, 0)
	b = binary.LittleEndian.AppendUint32(b, image.CRC(b[16:]))
	_, err = image.Decode("c", b, image.KindCore)
	requireFormatError(t, err, "c")

	// An empty file (header and END only) is well-formed.
	recs, err = image.Decode("c", frame(image.KindFiles, 1, 0), image.KindFiles)
	require.NoError(t, err)
	require.Empty(t, recs)
}

// TestStructure checks Load's semantic checks, with well-framed files.
func TestStructure(t *testing.T) {
	type mutate func(c *image.Checkpoint)
	cases := map[string]struct {
		m    mutate
		file string
	}{
		"unknown record in core": {func(c *image.Checkpoint) {}, image.CoreFile(testPid)},
		"task pid mismatch":      {func(c *image.Checkpoint) { c.Processes[0].Task.Pid = 1 }, image.CoreFile(testPid)},
		"no threads":             {func(c *image.Checkpoint) { c.Processes[0].Threads = nil }, image.CoreFile(testPid)},
		"vma overlap": {func(c *image.Checkpoint) {
			c.Processes[0].VMAs[1].Start = c.Processes[0].VMAs[0].Start + image.PageSize
		}, image.MMFile(testPid)},
		"vma unaligned": {func(c *image.Checkpoint) { c.Processes[0].VMAs[3].End++ }, image.MMFile(testPid)},
		"vma empty": {func(c *image.Checkpoint) {
			c.Processes[0].VMAs[3].End = c.Processes[0].VMAs[3].Start
			c.Processes[0].PageMap = c.Processes[0].PageMap[:1] // (the writer refuses a run outside every vma)
		}, image.MMFile(testPid)},
		"run outside vmas": {func(c *image.Checkpoint) {
			c.Processes[0].PageMap[1].Pages = 1000
		}, image.PageMapFile(testPid)},
		"run unaligned": {func(c *image.Checkpoint) { c.Processes[0].PageMap[1].Addr += 8 }, image.PageMapFile(testPid)},
		"run offset gap": {func(c *image.Checkpoint) {
			c.Processes[0].PageMap[2].Offset += image.PageSize
		}, image.PageMapFile(testPid)},
		"run zero pages": {func(c *image.Checkpoint) { c.Processes[0].PageMap[0].Pages = 0 }, image.PageMapFile(testPid)},
		"runs out of order": {func(c *image.Checkpoint) {
			pm := c.Processes[0].PageMap
			pm[0], pm[1] = pm[1], pm[0]
			pm[0].Offset, pm[1].Offset = image.PageSize, image.PageSize+3*image.PageSize
		}, image.PageMapFile(testPid)},
		"runs overlap": {func(c *image.Checkpoint) {
			pm := c.Processes[0].PageMap
			pm[2].Addr = pm[1].Addr + image.PageSize
		}, image.PageMapFile(testPid)},
		"duplicate file id":  {func(c *image.Checkpoint) { c.Files[1].ID = 1 }, image.FilesFile},
		"fd to unknown file": {func(c *image.Checkpoint) { c.Processes[0].Fds[3].FileID = 99 }, image.FdsFile(testPid)},
		"duplicate fd":       {func(c *image.Checkpoint) { c.Processes[0].Fds[1].Fd = 0 }, image.FdsFile(testPid)},
		"negative fd":        {func(c *image.Checkpoint) { c.Processes[0].Fds[0].Fd = -1 }, image.FdsFile(testPid)},
		"no pids":            {func(c *image.Checkpoint) { c.Inventory.Pids = nil }, image.InventoryFile},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			dir, _, _ := newImage(t)
			c := testCheckpoint()
			// Rewrite the metadata (keeping the pages) with the change.
			orig, err := image.Load(dir)
			require.NoError(t, err)
			c.Processes[0].PageMap = orig.Processes[0].PageMap
			tc.m(c)
			w, err := image.Create(filepath.Join(t.TempDir(), "meta"), false)
			require.NoError(t, err)
			var badRuns []rec
			if tc.file == image.PageMapFile(testPid) {
				// The writer refuses what the loader refuses: write the page
				// map by hand.
				err := w.WriteMeta(c)
				require.Error(t, err)
				require.Contains(t, err.Error(), fmt.Sprintf("page map of pid %d", testPid))
				for _, r := range c.Processes[0].PageMap {
					b, err := json.Marshal(r)
					require.NoError(t, err)
					badRuns = append(badRuns, rec{image.TagPageRun, b})
				}
				c.Processes[0].PageMap = nil
				w.Abort()
				w, err = image.Create(filepath.Join(t.TempDir(), "meta"), false)
				require.NoError(t, err)
			}
			require.NoError(t, w.WriteMeta(c))
			if badRuns != nil {
				require.NoError(t, os.WriteFile(filepath.Join(w.TempDir(), tc.file), frame(image.KindPageMap, 1, 0, badRuns...), 0o600))
			}
			if name == "unknown record in core" {
				recs := readRecs(t, w.TempDir(), image.CoreFile(testPid), image.KindCore)
				recs = append(recs, rec{image.TagVMA, []byte(`{}`)})
				require.NoError(t, os.WriteFile(filepath.Join(w.TempDir(), image.CoreFile(testPid)),
					frame(image.KindCore, 1, 0, recs...), 0o600))
			}
			src := tc.file
			if name == "task pid mismatch" {
				src = image.CoreFile(1)
			}
			b, err := os.ReadFile(filepath.Join(w.TempDir(), src))
			require.NoError(t, err)
			w.Abort()
			require.NoError(t, os.WriteFile(filepath.Join(dir, tc.file), b, 0o600))
			_, err = image.Load(dir)
			requireFormatError(t, err, tc.file)
		})
	}
}

// TestPageRunOverflow: a run whose end wraps around the address space must
// not pass the "inside a VMA" check, and runs must not be able to make the
// expected pages file size wrap around.
func TestPageRunOverflow(t *testing.T) {
	dir, _, _ := newImage(t)
	top := uint64(0xfffffffffffff000)
	mm := readRecs(t, dir, image.MMFile(testPid), image.KindMM)
	vma, err := json.Marshal(image.VMA{Start: top - 1<<52, End: top, Prot: "rw"})
	require.NoError(t, err)
	mm = append(mm, rec{image.TagVMA, vma})
	require.NoError(t, os.WriteFile(filepath.Join(dir, image.MMFile(testPid)), frame(image.KindMM, 1, 0, mm...), 0o600))
	pmPath := filepath.Join(dir, image.PageMapFile(testPid))
	pm := readRecs(t, dir, image.PageMapFile(testPid), image.KindPageMap)
	require.NoError(t, os.WriteFile(pmPath, frame(image.KindPageMap, 1, 0, pm...), 0o600))
	_, err = loadAll(dir)
	require.NoError(t, err, "an extra VMA without pages is fine")

	// A run starting in the last page and wrapping around.
	var last image.PageRun
	require.NoError(t, json.Unmarshal(pm[len(pm)-1].payload, &last))
	run := image.PageRun{Addr: top - image.PageSize, Pages: 2, Offset: last.Offset + last.Pages*image.PageSize}
	b, err := json.Marshal(run)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(pmPath, frame(image.KindPageMap, 1, 0, append(slices.Clone(pm), rec{image.TagPageRun, b})...), 0o600))
	pages := filepath.Join(dir, image.PagesFile(testPid))
	st, err := os.Stat(pages)
	require.NoError(t, err)
	require.NoError(t, os.Truncate(pages, st.Size()+2*image.PageSize))
	_, err = image.Load(dir)
	requireFormatError(t, err, image.PageMapFile(testPid))
	require.NoError(t, os.Truncate(pages, st.Size()))

	// 4096 runs of 2^52 bytes each add up to 2^64: the expected size of the
	// pages file would wrap around to its real size.
	recs := slices.Clone(pm)
	off := last.Offset + last.Pages*image.PageSize
	for i := 0; i < 4096; i++ {
		b, err := json.Marshal(image.PageRun{Addr: top - 1<<52, Pages: 1 << 40, Offset: off})
		require.NoError(t, err)
		recs = append(recs, rec{image.TagPageRun, b})
		off += 1 << 52
	}
	require.NoError(t, os.WriteFile(pmPath, frame(image.KindPageMap, 1, 0, recs...), 0o600))
	_, err = image.Load(dir)
	requireFormatError(t, err, image.PageMapFile(testPid))
}

// TestSpecExample reproduces the worked example of docs/IMAGE.md §10.
func TestSpecExample(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "img")
	w, err := image.Create(dir, false)
	require.NoError(t, err)
	pw, err := w.Pages(1234)
	require.NoError(t, err)
	page := make([]byte, image.PageSize)
	for i := range page {
		page[i] = byte(i)
	}
	require.NoError(t, pw.Write(page))
	require.Equal(t, uint32(0x9C71FE32), image.CRC(page))
	require.NoError(t, w.WriteMeta(&image.Checkpoint{
		Inventory: image.Inventory{FormatMajor: 1, Pids: []int{1234}, RootPid: 1234},
		Processes: []*image.Process{{
			Task: image.Task{Pid: 1234}, Threads: []image.Thread{{Tid: 1234, XState: &image.XState{Legacy: make([]byte, 512)}}},
			VMAs:    []image.VMA{{Start: 0x7ffffffde000, End: 0x7ffffffff000, Prot: "rw"}},
			PageMap: []image.PageRun{{Addr: 0x7fffffffe000, Pages: 1, Offset: image.PageSize, CRC: image.CRC(page)}},
		}},
	}))
	require.NoError(t, w.Commit())
	_, err = loadAll(dir)
	require.NoError(t, err)

	hexdump := `
43 52 49 4d 41 47 45 0a  04 00 01 03 8c 7c 9d 43
06 00 00 00 44 00 00 00  7b 22 61 64 64 72 22 3a
31 34 30 37 33 37 34 38  38 33 34 37 31 33 36 2c
22 70 61 67 65 73 22 3a  31 2c 22 6f 66 66 73 65
74 22 3a 34 30 39 36 2c  22 63 72 63 33 32 63 22
3a 32 36 32 34 37 31 36  33 33 38 7d e4 d7 3e 0d
00 00 00 00 08 00 00 00  01 00 00 00 00 00 00 00
bc 30 2e 85`
	exp, err := hex.DecodeString(strings.Join(strings.Fields(hexdump), ""))
	require.NoError(t, err)
	got, err := os.ReadFile(filepath.Join(dir, image.PageMapFile(1234)))
	require.NoError(t, err)
	require.Equal(t, exp, got)
	require.Equal(t, uint32(0xE3069283), image.CRC([]byte("123456789")), "CRC-32C check value")
}

// TestLoadMissingDir: an image directory that does not exist, or is not a
// directory, is named as such, not as an incomplete image.
func TestLoadMissingDir(t *testing.T) {
	tmp := t.TempDir()
	_, err := image.Load(filepath.Join(tmp, "nonexistent"))
	require.EqualError(t, err, "image directory "+filepath.Join(tmp, "nonexistent")+" does not exist")
	file := filepath.Join(tmp, "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	_, err = image.Load(file)
	require.EqualError(t, err, "image "+file+" is not a directory")
	_, err = image.Load(tmp)
	require.EqualError(t, err, "image "+tmp+" has no inventory.img: not a cr image, or an incomplete one")
}

// TestShowJSONSigned: a signed 64-bit value beyond ±2^53 (mtime_ns) is a
// hex string like the unsigned ones, and reads back exactly; a smaller one
// stays a number.
func TestShowJSONSigned(t *testing.T) {
	f := image.File{ID: 1, Ident: image.FileIdent{Path: "/x", MtimeNs: 1796035586425623459, Size: 42},
		Locks: []image.FileLock{{Kind: image.LockPOSIX, Type: "read", Start: -(1 << 53) - 1, End: -1}}}
	var b bytes.Buffer
	require.NoError(t, image.WriteShowJSON(&b, &f))
	require.Contains(t, b.String(), `"mtime_ns": "0x18ecccd99cdc13a3"`)
	var v struct {
		Ident struct {
			MtimeNs string `json:"mtime_ns"`
			Size    any    `json:"size"`
		} `json:"ident"`
		Locks []struct {
			Start string `json:"start"`
			End   any    `json:"end"`
		} `json:"locks"`
	}
	require.NoError(t, json.Unmarshal(b.Bytes(), &v), b.String())
	n, err := strconv.ParseInt(v.Ident.MtimeNs, 0, 64)
	require.NoError(t, err)
	require.Equal(t, f.Ident.MtimeNs, n)
	n, err = strconv.ParseInt(v.Locks[0].Start, 0, 64)
	require.NoError(t, err)
	require.Equal(t, f.Locks[0].Start, n)
	require.Equal(t, float64(42), v.Ident.Size)
	require.Equal(t, float64(-1), v.Locks[0].End)
}
