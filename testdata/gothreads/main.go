// Command gothreads is a multi-threaded fixture: a Go program whose runtime
// always runs several OS threads, plus a few busy goroutines pinned to their
// own threads. It is used to check that the dumper refuses multi-threaded
// targets. It follows the fixture protocol: WORKDIR argument, a READY line,
// OK on SIGUSR1, BYE and exit 0 on SIGUSR2.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
)

var counter atomic.Uint64

func main() {
	if len(os.Args) < 2 {
		fmt.Println("usage: gothreads WORKDIR")
		os.Exit(2)
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2)

	for i := 0; i < 3; i++ {
		go func() {
			runtime.LockOSThread()
			for {
				counter.Add(1)
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	// Wait until the workers have run so that their threads exist.
	for counter.Load() < 3 {
		time.Sleep(time.Millisecond)
	}
	os.Stdout.WriteString("READY counter=0x0\n")
	for sig := range sigs {
		n := counter.Add(1) // strictly increasing between checks
		if sig == syscall.SIGUSR2 {
			fmt.Fprintf(os.Stdout, "BYE counter=%d\n", n)
			os.Exit(0)
		}
		fmt.Fprintf(os.Stdout, "OK counter=%d\n", n)
	}
}
