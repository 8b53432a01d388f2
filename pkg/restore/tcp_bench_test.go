package restore_test

import (
	"context"
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/dump"
	"github.com/cr-tools/cr/pkg/restore"
)

// BenchmarkTCPConnections dumps (with --tcp-established, killing it) and
// restores one server process holding 1, 100 and 1,000 established
// loopback connections whose peers are the benchmark's own sockets
// (outside the dumped process); the restored process is the next
// iteration's target. dump-ms is the wall time of dump.Run (freeze, lock,
// TCP repair of every connection, image, kill), restore-ms that of
// restore.Run (sockets rebuilt, lock removed), total-ms their sum. Every
// connection is checked alive at the end.
func BenchmarkTCPConnections(b *testing.B) {
	testutil.RequireRoot(b)
	bin := testutil.BuildC(b, "tcp")
	for _, n := range []int{1, 100, 1000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			p := testutil.Start(b, bin, "serve", "4")
			addr := "127.0.0.1:" + p.Info["port"]
			conns := make([]net.Conn, n)
			for i := range conns {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				conns[i] = c
			}
			ping := func() {
				buf := make([]byte, 1)
				for i, c := range conns {
					c.SetDeadline(time.Now().Add(10 * time.Second))
					if _, err := c.Write([]byte{byte(i)}); err != nil {
						b.Fatalf("connection %d: %v", i, err)
					}
					if _, err := c.Read(buf); err != nil || buf[0] != byte(i) {
						b.Fatalf("connection %d: %v", i, err)
					}
				}
			}
			ping() // every connection accepted
			base := b.TempDir()
			var dumpTime, restoreTime time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				dir := filepath.Join(base, strconv.Itoa(i))
				t0 := time.Now()
				if _, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: dir, TCPEstablished: true}); err != nil {
					b.Fatalf("dump: %v", err)
				}
				dumpTime += time.Since(t0)
				t0 = time.Now()
				res, err := restore.Run(context.Background(), restore.Options{Dir: dir})
				if err != nil {
					b.Fatalf("restore: %v", err)
				}
				restoreTime += time.Since(t0)
				p = testutil.Adopt(b, res.Pid, p.Dir)
			}
			b.StopTimer()
			ping()
			b.ReportMetric(float64(dumpTime.Microseconds())/1000/float64(b.N), "dump-ms")
			b.ReportMetric(float64(restoreTime.Microseconds())/1000/float64(b.N), "restore-ms")
			b.ReportMetric(float64((dumpTime+restoreTime).Microseconds())/1000/float64(b.N), "total-ms")
		})
	}
}
