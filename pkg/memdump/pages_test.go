package memdump_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"unsafe"

	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/memdump"
	"golang.org/x/sys/unix"
)

const ps = image.PageSize

func addrOf(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(&b[0]))) }

func mmap(t *testing.T, n int, prot, flags int, fd int) []byte {
	t.Helper()
	b, err := unix.Mmap(fd, 0, n*ps, prot, flags)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(b) })
	unix.Madvise(b, unix.MADV_NOHUGEPAGE)
	return b
}

func fillPage(p []byte, tag byte) {
	for i := range p {
		p[i] = tag ^ byte(i*13)
	}
}

// selfLayout builds, in the test process itself, mappings that exercise the
// scanner and the page reader, and returns their VMAs (sorted), the bytes
// expected for every page that must be saved and the address of mapping A.
func selfLayout(t *testing.T) ([]image.VMA, map[uint64][]byte, uint64) {
	want := map[uint64][]byte{}
	var vmas []image.VMA
	page := func(b []byte, i int) []byte { return b[i*ps : (i+1)*ps] }

	// A: 16 pages; 0-7 written, 8-11 only read (zero page), 12-15 untouched;
	// pages 4-5 made read-only, splitting the VMA in three.
	a := mmap(t, 16, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, -1)
	for i := 0; i < 8; i++ {
		fillPage(page(a, i), byte(i+1))
		want[addrOf(a)+uint64(i*ps)] = append([]byte(nil), page(a, i)...)
	}
	var sink byte
	for i := 8; i < 12; i++ {
		sink += a[i*ps]
	}
	_ = sink
	if err := unix.Mprotect(a[4*ps:6*ps], unix.PROT_READ); err != nil {
		t.Fatal(err)
	}
	base := addrOf(a)
	vmas = append(vmas,
		image.VMA{Start: base, End: base + 4*ps, Prot: "rw"},
		image.VMA{Start: base + 4*ps, End: base + 6*ps, Prot: "r"},
		image.VMA{Start: base + 6*ps, End: base + 16*ps, Prot: "rw"})

	// B: 3 pages written, then PROT_NONE: read through /proc/PID/mem.
	b := mmap(t, 3, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, -1)
	for i := 0; i < 3; i++ {
		fillPage(page(b, i), byte(0x40+i))
		want[addrOf(b)+uint64(i*ps)] = append([]byte(nil), page(b, i)...)
	}
	if err := unix.Mprotect(b, unix.PROT_NONE); err != nil {
		t.Fatal(err)
	}
	vmas = append(vmas, image.VMA{Start: addrOf(b), End: addrOf(b) + 3*ps, Prot: "-"})

	// C: a private file mapping of 4 pages, all read, page 2 written (COW).
	path := filepath.Join(t.TempDir(), "file")
	data := make([]byte, 4*ps)
	fillPage(data, 0x77)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	c := mmap(t, 4, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE, int(f.Fd()))
	f.Close()
	for i := 0; i < 4; i++ {
		sink += c[i*ps]
	}
	fillPage(page(c, 2), 0x99)
	want[addrOf(c)+2*ps] = append([]byte(nil), page(c, 2)...)
	vmas = append(vmas, image.VMA{Start: addrOf(c), End: addrOf(c) + 4*ps, Prot: "rw"})

	sort.Slice(vmas, func(i, j int) bool { return vmas[i].Start < vmas[j].Start })
	return vmas, want, base
}

func TestScanVMAsSelf(t *testing.T) {
	vmas, want, aBase := selfLayout(t)
	runs, err := memdump.ScanVMAs(os.Getpid(), vmas)
	if err != nil {
		t.Fatal(err)
	}
	got := map[uint64]bool{}
	for i, r := range runs {
		if r.Pages == 0 {
			t.Errorf("empty run %+v", r)
		}
		if i > 0 && r.Addr < runs[i-1].Addr+runs[i-1].Pages*ps {
			t.Errorf("runs out of order or overlapping: %+v then %+v", runs[i-1], r)
		}
		// No run crosses a VMA boundary.
		n := 0
		for _, v := range vmas {
			if r.Addr < v.End && v.Start < r.Addr+r.Pages*ps {
				n++
				if r.Addr < v.Start || r.Addr+r.Pages*ps > v.End {
					t.Errorf("run %#x+%d crosses vma %#x-%#x", r.Addr, r.Pages, v.Start, v.End)
				}
			}
		}
		if n != 1 {
			t.Errorf("run %#x+%d touches %d vmas", r.Addr, r.Pages, n)
		}
		for p := uint64(0); p < r.Pages; p++ {
			got[r.Addr+p*ps] = true
		}
	}
	for a := range want {
		if !got[a] {
			t.Errorf("page %#x not in the runs", a)
		}
	}
	for a := range got {
		if want[a] == nil {
			t.Errorf("page %#x (zero page, untouched or unmodified file page) in the runs", a)
		}
	}
	// A's written pages 0-7 come as runs of 4, 2 and 2 pages (split at the
	// mprotect boundaries).
	var sizes []uint64
	for _, r := range runs {
		if r.Addr >= aBase && r.Addr < aBase+16*ps {
			sizes = append(sizes, r.Pages)
		}
	}
	if fmt.Sprint(sizes) != "[4 2 2]" {
		t.Errorf("runs in the split anonymous mapping have %v pages, want [4 2 2]", sizes)
	}
	t.Logf("runs %+v", runs)
}

func TestDumpPagesSelf(t *testing.T) {
	vmas, want, _ := selfLayout(t)
	runs, err := memdump.ScanVMAs(os.Getpid(), vmas)
	if err != nil {
		t.Fatal(err)
	}
	for _, opt := range []memdump.DumpOptions{{}, {BufSize: ps, Buffers: 1}, {BufSize: 2 * ps, Buffers: 2}, {BufSize: 3 * ps, Buffers: 5}} {
		t.Run(fmt.Sprintf("buf=%d,n=%d", opt.BufSize/ps, opt.Buffers), func(t *testing.T) {
			w, err := image.Create(filepath.Join(t.TempDir(), "img"), false)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Abort()
			pw, err := w.Pages(os.Getpid())
			if err != nil {
				t.Fatal(err)
			}
			pm, err := memdump.DumpPages(os.Getpid(), runs, vmas, pw, opt)
			if err != nil {
				t.Fatal(err)
			}
			file, err := os.ReadFile(filepath.Join(w.TempDir(), image.PagesFile(os.Getpid())))
			if err != nil {
				t.Fatal(err)
			}
			if len(pm) != len(runs) {
				t.Fatalf("%d page runs for %d runs", len(pm), len(runs))
			}
			off := uint64(ps)
			for i, r := range pm {
				if r.Addr != runs[i].Addr || r.Pages != runs[i].Pages || r.Offset != off {
					t.Errorf("page run %d: %+v for run %+v at offset %d", i, r, runs[i], off)
				}
				data := file[r.Offset : r.Offset+r.Pages*ps]
				if crc := image.CRC(data); crc != r.CRC {
					t.Errorf("run %#x: crc %#x, data has %#x", r.Addr, r.CRC, crc)
				}
				for p := uint64(0); p < r.Pages; p++ {
					if !bytes.Equal(data[p*ps:(p+1)*ps], want[r.Addr+p*ps]) {
						t.Errorf("saved page %#x differs", r.Addr+p*ps)
					}
				}
				off += r.Pages * ps
			}
			if uint64(len(file)) != off {
				t.Errorf("pages file has %d bytes, want %d", len(file), off)
			}
		})
	}
}

// Reading memory that is gone is an error, not zeroes.
func TestDumpPagesUnmapped(t *testing.T) {
	a := mmap(t, 4, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, -1)
	for i := range a {
		a[i] = 1
	}
	vmas := []image.VMA{{Start: addrOf(a), End: addrOf(a) + 4*ps, Prot: "rw"}}
	runs, err := memdump.ScanVMAs(os.Getpid(), vmas)
	if err != nil || len(runs) != 1 || runs[0].Pages != 4 {
		t.Fatalf("runs %+v, %v", runs, err)
	}
	// unix.Munmap only takes whole mappings: unmap the tail directly.
	if _, _, e := unix.Syscall(unix.SYS_MUNMAP, uintptr(addrOf(a)+2*ps), 2*ps, 0); e != 0 {
		t.Fatal(e)
	}
	w, err := image.Create(filepath.Join(t.TempDir(), "img"), false)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	pw, err := w.Pages(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := memdump.DumpPages(os.Getpid(), runs, vmas, pw, memdump.DumpOptions{}); err == nil {
		t.Fatal("DumpPages of unmapped memory succeeded")
	} else {
		t.Log(err)
	}
}
