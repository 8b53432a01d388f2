package dump_test

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

// Checkpoint a child process into an image directory, then restore it with
// the same pid. Needs root (CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE, and
// CAP_SYS_PTRACE).
func ExampleRun() {
	// The child gets a session of its own: one whose session lies outside
	// the image is refused (unless Options.ShellJob).
	cmd := exec.Command("sleep", "1000")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	dir, _ := os.MkdirTemp("", "cr-example-")
	defer os.RemoveAll(dir)

	res, err := dump.Run(context.Background(), dump.Options{Pid: cmd.Process.Pid, Dir: dir + "/img"})
	if err != nil {
		log.Fatal(err)
	}
	cmd.Wait() // the dump killed it and, as its tracer, reaped it: Wait only returns an error
	fmt.Println("pages saved:", res.Pages > 0)

	r, err := restore.Run(context.Background(), restore.Options{Dir: dir + "/img"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("restored with its pid:", r.Pid == cmd.Process.Pid)
	syscall.Kill(r.Pid, syscall.SIGKILL) // the restored process is our child
	syscall.Wait4(r.Pid, nil, 0, nil)
	// Output:
	// pages saved: true
	// restored with its pid: true
}
