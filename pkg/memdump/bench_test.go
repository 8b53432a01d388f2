package memdump_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/memdump"
	"github.com/cr-tools/cr/pkg/ptrace"
	"golang.org/x/sys/unix"
)

// bigmem starts the bigmem fixture with mib MiB and returns its pid, VMAs
// and page runs.
func bigmem(b testing.TB, mib int) (int, []image.VMA, []memdump.Run) {
	testutil.RequireRoot(b)
	p := testutil.Start(b, testutil.BuildC(b, "bigmem"), strconv.Itoa(mib))
	maps, err := memdump.ReadSmaps(p.Pid)
	if err != nil {
		b.Fatal(err)
	}
	vmas, err := memdump.VMAs(p.Pid, maps)
	if err != nil {
		b.Fatal(err)
	}
	runs, err := memdump.ScanVMAs(p.Pid, vmas)
	if err != nil {
		b.Fatal(err)
	}
	return p.Pid, vmas, runs
}

func runBytes(runs []memdump.Run) int64 {
	var n int64
	for _, r := range runs {
		n += int64(r.Pages) * image.PageSize
	}
	return n
}

// BenchmarkDumpPages measures DumpPages alone (no seize, no metadata) for
// several buffer sizes and counts (the process is not stopped, which does
// not matter for throughput). Measurements on this shared 2-core machine
// vary by 2x from one minute to the next: compare configurations with
// -count and interleaving, not single runs.
func BenchmarkDumpPages(b *testing.B) {
	const mib = 1024
	pid, vmas, runs := bigmem(b, mib)
	parent := b.TempDir()
	// {} is the default (4 MiB x 4); 8 MiB x 3 was the previous default.
	for _, c := range []memdump.DumpOptions{
		{}, {BufSize: 8 << 20, Buffers: 3}, {BufSize: 2 << 20, Buffers: 4}, {BufSize: 16 << 20, Buffers: 4},
	} {
		b.Run(fmt.Sprintf("buf=%dMiB/n=%d", c.BufSize>>20, c.Buffers), func(b *testing.B) {
			b.SetBytes(runBytes(runs))
			for i := 0; i < b.N; i++ {
				w, err := image.Create(filepath.Join(parent, "img"), false)
				if err != nil {
					b.Fatal(err)
				}
				pw, err := w.Pages(pid)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := memdump.DumpPages(pid, runs, vmas, pw, c); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				w.Abort()
				b.StartTimer()
			}
		})
	}
}

// BenchmarkReadVM is the ceiling of reading: process_vm_readv in 8 MiB
// chunks, nothing written.
func BenchmarkReadVM(b *testing.B) {
	pid, _, runs := bigmem(b, 1024)
	buf := make([]byte, 8<<20)
	b.SetBytes(runBytes(runs))
	for i := 0; i < b.N; i++ {
		for _, r := range runs {
			for off := uint64(0); off < r.Pages*image.PageSize; off += uint64(len(buf)) {
				n := min(uint64(len(buf)), r.Pages*image.PageSize-off)
				if err := ptrace.Read(pid, uintptr(r.Addr+off), buf[:n]); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
}

// BenchmarkPageCacheWrite is the ceiling of writing: 1 GiB in 8 MiB pwrites
// to a new file (no fsync), removed after each iteration.
func BenchmarkPageCacheWrite(b *testing.B) {
	buf := make([]byte, 8<<20)
	for i := range buf {
		buf[i] = byte(i*7 + 1)
	}
	path := filepath.Join(b.TempDir(), "pages")
	b.SetBytes(1 << 30)
	for i := 0; i < b.N; i++ {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			b.Fatal(err)
		}
		for off := int64(0); off < 1<<30; off += int64(len(buf)) {
			if _, err := f.WriteAt(buf, off); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		f.Close()
		unix.Unlink(path)
		b.StartTimer()
	}
}

// BenchmarkSparseLayout scans and dumps a 1 GiB private anonymous
// MAP_NORESERVE mapping written every STEP pages (the large sizes of
// TestEveryNthPage and TestPageLayoutProperty): "scan" is ScanVMAs alone,
// "dump" is ScanVMAs plus DumpPages; bytes/s count the saved pages.
func BenchmarkSparseLayout(b *testing.B) {
	testutil.RequireRoot(b)
	for _, step := range []int{2, 97, 1000} {
		layout := filepath.Join(b.TempDir(), "layout")
		if err := os.WriteFile(layout, []byte(fmt.Sprintf("map %d rw 0 0\ns 0 %d\n", 1<<30/image.PageSize, step)), 0o600); err != nil {
			b.Fatal(err)
		}
		p := testutil.Start(b, testutil.BuildC(b, "pagelayout"), layout)
		maps, err := memdump.ReadSmaps(p.Pid)
		if err != nil {
			b.Fatal(err)
		}
		vmas, err := memdump.VMAs(p.Pid, maps)
		if err != nil {
			b.Fatal(err)
		}
		runs, err := memdump.ScanVMAs(p.Pid, vmas)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("step=%d/scan", step), func(b *testing.B) {
			b.ReportMetric(float64(len(runs)), "runs")
			for i := 0; i < b.N; i++ {
				if _, err := memdump.ScanVMAs(p.Pid, vmas); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("step=%d/dump", step), func(b *testing.B) {
			b.SetBytes(runBytes(runs))
			parent := b.TempDir()
			for i := 0; i < b.N; i++ {
				w, err := image.Create(filepath.Join(parent, "img"), false)
				if err != nil {
					b.Fatal(err)
				}
				pw, err := w.Pages(p.Pid)
				if err != nil {
					b.Fatal(err)
				}
				runs, err := memdump.ScanVMAs(p.Pid, vmas)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := memdump.DumpPages(p.Pid, runs, vmas, pw, memdump.DumpOptions{}); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				w.Abort()
				b.StartTimer()
			}
		})
		p.Kill()
	}
}
