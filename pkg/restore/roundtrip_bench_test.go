package restore_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/dump"
	"github.com/cr-tools/cr/pkg/restore"
)

// BenchmarkRoundTripTiny dumps (killing the target) and restores a tiny
// single-threaded C fixture once per iteration; the restored process is the
// next iteration's target, so no process is started inside the loop.
// dump-ms is the wall time of dump.Run, restore-ms the Duration that
// restore.Run reports, total-ms their sum.
func BenchmarkRoundTripTiny(b *testing.B) {
	testutil.RequireRoot(b)
	benchRoundTrip(b, testutil.BuildC(b, "tiny"))
}

// BenchmarkRoundTripThreads is BenchmarkRoundTripTiny with the pthreads
// fixture (main thread and four workers).
func BenchmarkRoundTripThreads(b *testing.B) {
	testutil.RequireRoot(b)
	benchRoundTrip(b, testutil.BuildC(b, "pthreads", "-pthread"))
}

// BenchmarkRoundTripGo is BenchmarkRoundTripTiny with the gostate Go fixture.
func BenchmarkRoundTripGo(b *testing.B) {
	testutil.RequireRoot(b)
	benchRoundTrip(b, testutil.BuildGo(b, "testdata/gostate"))
}

func benchRoundTrip(b *testing.B, bin string, args ...string) {
	p := testutil.Start(b, bin, args...)
	pid := p.Pid
	p.Check(b)
	base := b.TempDir()
	var dumpTime, restoreTime time.Duration
	var pages uint64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dir := filepath.Join(base, strconv.Itoa(i))
		t0 := time.Now()
		dres, err := dump.Run(context.Background(), dump.Options{Pid: pid, Dir: dir})
		dumpTime += time.Since(t0)
		if err != nil {
			b.Fatalf("iteration %d: dump pid %d: %v", i, pid, err)
		}
		pages += dres.Pages
		// The dump killed the target and cr's tracer, in this process (its
		// parent), reaped it: neither a process nor a zombie may hold the pid,
		// or restore.Run would wait for it.
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); !errors.Is(err, fs.ErrNotExist) {
			state, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
			b.Fatalf("iteration %d: pid %d still there after the dump (%v): %s", i, pid, err, state)
		}
		res, err := restore.Run(context.Background(), restore.Options{Dir: dir})
		if err != nil {
			b.Fatalf("iteration %d: restore %s: %v", i, dir, err)
		}
		restoreTime += res.Duration
		if res.Pid != pid {
			b.Fatalf("iteration %d: restored pid %d, want %d", i, res.Pid, pid)
		}
		b.StopTimer()
		os.RemoveAll(dir)
		if i == b.N-1 {
			// The restored process is our child: Adopt kills and reaps it
			// at the end (as Start's cleanup would too).
			q := testutil.Adopt(b, res.Pid, p.Dir)
			q.Check(b)
		}
		b.StartTimer()
	}
	b.StopTimer()
	n := float64(b.N)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / n }
	b.ReportMetric(ms(dumpTime), "dump-ms/op")
	b.ReportMetric(ms(restoreTime), "restore-ms/op")
	b.ReportMetric(ms(dumpTime+restoreTime), "total-ms/op")
	b.ReportMetric(float64(pages)/n, "pages/op")
}

// BenchmarkRoundTripEightThreads: a C program with 8 threads (the main one
// and 7 pthreads).
func BenchmarkRoundTripEightThreads(b *testing.B) {
	testutil.RequireRoot(b)
	benchRoundTrip(b, testutil.BuildC(b, "pthreads", "-pthread", "-DNWORKERS=7"))
}

// BenchmarkRoundTripTree dumps and restores trees of 1, 8 and 64
// processes (a root and sleeping children).
func BenchmarkRoundTripTree(b *testing.B) {
	testutil.RequireRoot(b)
	bin := testutil.BuildC(b, "forker")
	for _, n := range []int{1, 8, 64} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			p := testutil.Start(b, bin, strconv.Itoa(n))
			pid := p.Pid
			base := b.TempDir()
			var dumpTime, restoreTime time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				dir := filepath.Join(base, strconv.Itoa(i))
				t0 := time.Now()
				if _, err := dump.Run(context.Background(), dump.Options{Pid: pid, Dir: dir}); err != nil {
					b.Fatal(err)
				}
				dumpTime += time.Since(t0)
				b.StopTimer()
				reapTree(b, dir) // the killed children were reparented to us
				b.StartTimer()
				res, err := restore.Run(context.Background(), restore.Options{Dir: dir})
				if err != nil {
					b.Fatal(err)
				}
				restoreTime += res.Duration
				b.StopTimer()
				os.RemoveAll(dir)
				if i == b.N-1 {
					q := testutil.Adopt(b, res.Pid, p.Dir)
					q.Check(b)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(dumpTime.Microseconds())/1000/float64(b.N), "dump-ms/op")
			b.ReportMetric(float64(restoreTime.Microseconds())/1000/float64(b.N), "restore-ms/op")
		})
	}
}

// BenchmarkRoundTripFds dumps and restores a process holding 1,000 or
// 10,000 descriptors of one file: "distinct" gives each its own open file
// description (open(2) N times), "shared" makes them dups of one.
func BenchmarkRoundTripFds(b *testing.B) {
	testutil.RequireRoot(b)
	bin := testutil.BuildC(b, "onefile")
	for _, n := range []int{1000, 10000} {
		for _, mode := range []string{"distinct", "shared"} {
			b.Run(strconv.Itoa(n)+"-"+mode, func(b *testing.B) {
				benchRoundTrip(b, bin, strconv.Itoa(n), mode)
			})
		}
	}
}
