package restore_test

import (
	"context"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/dump"
	"github.com/cr-tools/cr/pkg/restore"
	"golang.org/x/sys/unix"
)

// BenchmarkRestore restores a process whose anonymous memory is entirely
// touched, from one image, once per iteration (the restored process is
// killed and reaped in between). MB/s counts the memory restored; fill
// compares the task reading its own pages (preadv) with cr pushing them
// (process_vm_writev).
func BenchmarkRestore(b *testing.B) {
	testutil.RequireRoot(b)
	bin := testutil.BuildC(b, "bigmem")
	for _, mib := range []int{256, 1024} {
		for _, fill := range []string{"preadv", "writev"} {
			name := strconv.Itoa(mib) + "MiB/" + fill
			b.Run(name, func(b *testing.B) {
				p := testutil.Start(b, bin, strconv.Itoa(mib))
				dir := filepath.Join(b.TempDir(), "img")
				if _, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: dir}); err != nil {
					b.Fatal(err)
				}
				p.Kill()
				b.SetBytes(int64(mib) << 20)
				var total time.Duration
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					res, err := restore.Run(context.Background(), restore.Options{Dir: dir, Fill: fill})
					if err != nil {
						b.Fatal(err)
					}
					total += res.Duration
					b.StopTimer()
					if i == b.N-1 {
						q := testutil.Adopt(b, res.Pid, p.Dir)
						q.Check(b)
					}
					unix.Kill(res.Pid, unix.SIGKILL)
					testutil.Reap(res.Pid, 5*time.Second)
					b.StartTimer()
				}
				b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "restore-ms/op")
			})
		}
	}
}
