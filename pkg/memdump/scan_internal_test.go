package memdump

import (
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"
	"unsafe"

	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// TestScanVectorSizes scans the same random layout of written pages with
// vectors of many sizes (around the kernel's 512-region bounce buffer and
// the default 1024), and checks that every scan reports exactly the written
// pages, each once, as maximal ascending runs.
func TestScanVectorSizes(t *testing.T) {
	const pages = 6000
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 1))
	b, err := unix.Mmap(-1, 0, pages*image.PageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(b)
	if err := unix.Madvise(b, unix.MADV_NOHUGEPAGE); err != nil {
		t.Fatal(err)
	}
	base := uint64(uintptr(unsafe.Pointer(&b[0])))
	want := make([]bool, pages)
	// Stretches of every 2nd page, of runs of random length, and of nothing.
	for p := 0; p < pages; {
		n := min(pages-p, 1+r.IntN(1500))
		switch r.IntN(3) {
		case 0:
			for i := p; i < p+n; i += 2 {
				want[i] = true
			}
		case 1:
			for i := p; i < p+n; {
				l := 1 + r.IntN(8)
				for j := i; j < min(i+l, p+n); j++ {
					want[j] = true
				}
				i += l + 1 + r.IntN(8)
			}
		}
		p += n
	}
	want[0], want[pages-1] = true, true
	for i, w := range want {
		if w {
			b[i*image.PageSize] = 1
		}
	}
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, n := range []int{1, 2, 3, 7, 255, 511, 512, 513, 1000, 1023, 1024, 1025, 4096} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			s := &Scanner{f: f, vec: make([]pageRegion, n)}
			// Start with a run that ends where the range begins: the first
			// region must extend it.
			prev := []Run{{Addr: base - 4*image.PageSize, Pages: 4}}
			runs, err := s.Scan(base, base+pages*image.PageSize, prev)
			if err != nil {
				t.Fatal(err)
			}
			if runs[0].Addr != base-4*image.PageSize || runs[0].Pages < 5 {
				t.Fatalf("the first region did not extend the run before the range: %+v", runs[0])
			}
			runs[0].Addr, runs[0].Pages = base, runs[0].Pages-4
			got := make([]bool, pages)
			for i, r := range runs {
				if i > 0 && r.Addr <= runs[i-1].Addr+runs[i-1].Pages*image.PageSize {
					t.Fatalf("run %d %#x+%d after %#x+%d: overlapping, out of order or not merged", i, r.Addr, r.Pages, runs[i-1].Addr, runs[i-1].Pages)
				}
				for p := (r.Addr - base) / image.PageSize; p < (r.Addr-base)/image.PageSize+r.Pages; p++ {
					got[p] = true
				}
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("page %d: saved %v, written %v", i, got[i], want[i])
				}
			}
		})
	}
}

// TestMarkShared checks markShared over runs of many lengths and gaps, so
// that both grouped and single reads of pagemap are used. Pages written by
// the test process are "exclusively mapped"; pages only read (the shared
// zero page) or never touched are not, and count as shared.
func TestMarkShared(t *testing.T) {
	const pages = 3 * 65536 / 2 // more than two pagemap windows
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 2))
	a, err := unix.Mmap(-1, 0, pages*image.PageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(a)
	if err := unix.Madvise(a, unix.MADV_NOHUGEPAGE); err != nil {
		t.Fatal(err)
	}
	shared := make([]bool, pages)
	var sink byte
	for i := 0; i < pages; i++ {
		switch r.IntN(3) {
		case 0:
			a[i*image.PageSize] = 1
		case 1:
			sink += a[i*image.PageSize]
			shared[i] = true
		default:
			shared[i] = true
		}
	}
	_ = sink
	base := uint64(uintptr(unsafe.Pointer(&a[0])))
	// Runs: mostly short with short gaps, some long ones, some long gaps.
	var runs []Run
	for p := 0; p < pages; {
		n := 1 + r.IntN(20)
		if r.IntN(20) == 0 {
			n = 1 + r.IntN(70000)
		}
		n = min(n, pages-p)
		runs = append(runs, Run{Addr: base + uint64(p)*image.PageSize, Pages: uint64(n)})
		p += n + r.IntN(4)
		if r.IntN(10) == 0 {
			p += 500 + r.IntN(1000)
		}
	}
	out, err := markShared(os.Getpid(), runs)
	if err != nil {
		t.Fatal(err)
	}
	k := 0 // input run of the output run
	var covered uint64
	for i, o := range out {
		for k < len(runs) && runs[k].Addr+runs[k].Pages*image.PageSize <= o.Addr {
			k++
		}
		in := runs[k]
		if o.Pages == 0 || o.Addr < in.Addr || o.Addr+o.Pages*image.PageSize > in.Addr+in.Pages*image.PageSize {
			t.Fatalf("output run %d %+v is not inside input run %+v", i, o, in)
		}
		for p := (o.Addr - base) / image.PageSize; p < (o.Addr-base)/image.PageSize+o.Pages; p++ {
			if shared[p] != o.Shared {
				t.Fatalf("page %d: shared %v, marked %v", p, shared[p], o.Shared)
			}
		}
		if i > 0 && out[i-1].Shared == o.Shared && out[i-1].Addr+out[i-1].Pages*image.PageSize == o.Addr && o.Addr != in.Addr {
			t.Fatalf("output runs %d and %d not merged", i-1, i)
		}
		covered += o.Pages
	}
	var want uint64
	for _, r := range runs {
		want += r.Pages
	}
	if covered != want {
		t.Fatalf("output runs cover %d pages, input %d", covered, want)
	}
}
