package ptrace

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Kill points: tests of the fail-safe injection need cr to die between two
// particular ptrace requests, a window a random SIGKILL hits only once in
// hundreds of tries. CR_TEST_KILL_AT=NAME:N in the environment makes the
// process SIGKILL itself the Nth time (from 1) it passes the kill point
// NAME, N=0 meaning every time. Without the variable a kill point costs one
// comparison. The names are those passed to killPoint below.
var (
	killAtName  string
	killAtN     int
	killAtCount int
	killAtMu    sync.Mutex
)

func init() {
	v := os.Getenv("CR_TEST_KILL_AT")
	if v == "" {
		return
	}
	name, n, _ := strings.Cut(v, ":")
	killAtName = name
	killAtN, _ = strconv.Atoi(n)
}

// killPoint SIGKILLs the process if CR_TEST_KILL_AT names this point and
// occurrence.
func killPoint(name string) {
	if killAtName == "" || name != killAtName {
		return
	}
	killAtMu.Lock()
	killAtCount++
	hit := killAtN == 0 || killAtCount == killAtN
	killAtMu.Unlock()
	if !hit {
		return
	}
	unix.Kill(os.Getpid(), unix.SIGKILL)
	for {
		time.Sleep(time.Second)
	}
}
