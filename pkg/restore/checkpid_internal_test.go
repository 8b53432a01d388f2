package restore

import (
	"errors"
	"os"
	"sync"
	"testing"
	"time"
)

// TestCheckPidRacesWithExit: checkPid on pids whose processes exit and are
// reaped meanwhile only ever says "free" (nil) or "in use"
// (*PidInUseError), never fails with a read error (ESRCH from a stat file
// opened before the reap).
func TestCheckPidRacesWithExit(t *testing.T) {
	tr := &treeRestore{opt: Options{PidWait: time.Millisecond}}
	deadline := time.Now().Add(time.Second)
	n := 0
	for time.Now().Before(deadline) {
		p, err := os.StartProcess("/bin/true", []string{"true"}, &os.ProcAttr{})
		if err != nil {
			t.Skipf("cannot start /bin/true: %v", err)
		}
		var wg sync.WaitGroup
		wg.Add(1)
		var bad error
		go func() {
			defer wg.Done()
			for {
				err := tr.checkPid(p.Pid)
				var inUse *PidInUseError
				switch {
				case err == nil:
					return
				case !errors.As(err, &inUse):
					bad = err
					return
				}
			}
		}()
		if _, err := p.Wait(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if bad != nil {
			t.Fatalf("checkPid(%d) on an exiting process (run %d): %v", p.Pid, n, bad)
		}
		n++
	}
	t.Logf("%d children", n)
}
