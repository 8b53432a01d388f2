package restore_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/exec"
	"syscall"

	"github.com/cr-tools/cr/pkg/dump"
	"github.com/cr-tools/cr/pkg/restore"
)

// Restore a checkpointed child, following the restore's phases and
// listing the processes and threads it made. Needs root.
func ExampleRun() {
	cmd := exec.Command("sleep", "1000")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // its own session: the image holds it
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	dir, _ := os.MkdirTemp("", "cr-example-")
	defer os.RemoveAll(dir)
	if _, err := dump.Run(context.Background(), dump.Options{Pid: cmd.Process.Pid, Dir: dir + "/img"}); err != nil {
		log.Fatal(err)
	}
	cmd.Wait() // killed and reaped by the dump (its tracer): Wait only returns an error

	var phases []restore.Phase
	res, err := restore.Run(context.Background(), restore.Options{Dir: dir + "/img", Events: func(e restore.Event) {
		if len(phases) == 0 || phases[len(phases)-1] != e.Phase {
			phases = append(phases, e.Phase)
		}
	}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(phases)
	fmt.Println(len(res.Processes), "process,", len(res.Processes[0].Tids), "thread, same pid:", res.Pid == cmd.Process.Pid)
	syscall.Kill(res.Pid, syscall.SIGKILL) // the restored process is our child
	syscall.Wait4(res.Pid, nil, 0, nil)
	// Output:
	// [validated created memory running]
	// 1 process, 1 thread, same pid: true
}
