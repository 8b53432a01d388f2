package dump_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/dump"
)

// BenchmarkDump dumps (with LeaveRunning) a process whose anonymous memory
// is entirely touched, into a fresh directory per iteration (no fsync).
// MB/s is the page throughput of the whole dump; frozen-ms/op how long the
// target was stopped.
func BenchmarkDump(b *testing.B) {
	testutil.RequireRoot(b)
	bin := testutil.BuildC(b, "bigmem")
	for _, mib := range []int{256, 1024} {
		name := strconv.Itoa(mib) + "MiB"
		if mib >= 1024 {
			name = strconv.Itoa(mib>>10) + "GiB"
		}
		b.Run(name, func(b *testing.B) {
			p := testutil.Start(b, bin, strconv.Itoa(mib))
			parent := b.TempDir()
			b.SetBytes(int64(mib) << 20)
			var frozen, pages, check time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				dir := filepath.Join(parent, "img"+strconv.Itoa(i))
				res, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: dir, LeaveRunning: true})
				if err != nil {
					b.Fatal(err)
				}
				if res.Pages < uint64(mib)<<20/4096 {
					b.Fatalf("saved %d pages, want at least %d", res.Pages, mib<<20/4096)
				}
				frozen += res.Frozen
				pages += res.PagesTime
				check += res.CheckTime
				b.StopTimer()
				os.RemoveAll(dir)
				b.StartTimer()
			}
			b.StopTimer()
			b.ReportMetric(float64(frozen.Microseconds())/1000/float64(b.N), "frozen-ms/op")
			b.ReportMetric(float64(int64(mib)<<20)*float64(b.N)/pages.Seconds()/1e6, "pages-MB/s")
			b.ReportMetric(float64(check.Microseconds())/float64(b.N), "check-us/op")
			p.Check(b)
		})
	}
}

// BenchmarkDumpTiny dumps (with LeaveRunning) the tiny fixture; check-us/op
// is what reading the image back before the commit (restore.Check) adds.
func BenchmarkDumpTiny(b *testing.B) {
	testutil.RequireRoot(b)
	p := testutil.Start(b, testutil.BuildC(b, "tiny"))
	parent := b.TempDir()
	var check time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dir := filepath.Join(parent, "img"+strconv.Itoa(i))
		res, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: dir, LeaveRunning: true})
		if err != nil {
			b.Fatal(err)
		}
		check += res.CheckTime
		b.StopTimer()
		os.RemoveAll(dir)
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(float64(check.Microseconds())/float64(b.N), "check-us/op")
	p.Check(b)
}
