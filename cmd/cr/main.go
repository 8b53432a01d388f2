// Command cr checkpoints and restores Linux processes.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/cr-tools/cr/pkg/dump"
	"github.com/cr-tools/cr/pkg/files"
	"github.com/cr-tools/cr/pkg/image"
)

const usage = `cr checkpoints a running Linux process into an image directory and restores it.

Usage:
  cr dump -t PID -o DIR [--leave-running] [--shell-job] [--file-locks] [--sync] [--ipc-all] [--ipc-id shm:ID,sem:ID,msg:ID] [-v]
  cr restore -i DIR [-d] [--pidfile FILE] [--shell-job] [--file-locks] [--inherit-fd fd[N]:ID]... [--force-kernel] [-v]
  cr show -i DIR [--json]
  cr check [-t PID [--shell-job] [--file-locks]]
  cr demo
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	verbose := false
	switch os.Args[1] {
	case "dump":
		verbose, err = cmdDump(os.Args[2:])
	case "restore":
		var code int
		code, verbose, err = cmdRestore(os.Args[2:])
		if err == nil {
			os.Exit(code)
		}
	case "show":
		err = cmdShow(os.Args[2:])
	case "check":
		err = cmdCheck(os.Args[2:])
	case "demo":
		err = cmdDemo(os.Args[2:])
	case "-h", "--help", "help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "cr: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		fail(err, verbose)
	}
}

// fail prints one line for the user; with -v, the whole chain.
func fail(err error, verbose bool) {
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	var se *silentError
	if errors.As(err, &se) {
		os.Exit(1) // the command printed what went wrong already
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(os.Stderr, "cr: %s\n", ue.msg)
		os.Exit(2)
	}
	if verbose {
		fmt.Fprintf(os.Stderr, "cr: %v\n", err)
		for e := errors.Unwrap(err); e != nil; e = errors.Unwrap(e) {
			fmt.Fprintf(os.Stderr, "  caused by: %v\n", e)
		}
	} else {
		fmt.Fprintf(os.Stderr, "cr: %v\n", err)
	}
	os.Exit(1)
}

// removeStale removes the temporary image directories beside dir that a
// killed cr left (see image.RemoveStale); with -v it says so. A failure to
// clean up is reported with -v only: it does not stop the command.
func removeStale(dir string, verbose bool) {
	removed, err := image.RemoveStale(dir)
	if !verbose {
		return
	}
	for _, r := range removed {
		fmt.Fprintf(os.Stderr, "removed %s, left by a cr that was killed\n", r)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "cr: %v\n", err)
	}
}

// silentError is a failure the command has reported on stdout already:
// cr exits 1 without another message.
type silentError struct{ err error }

func (e *silentError) Error() string { return e.err.Error() }

type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(os.Stdout)
			fs.PrintDefaults()
			return err
		}
		return &usageError{fmt.Sprintf("%s: %v (see cr %s -h)", fs.Name(), err, fs.Name())}
	}
	if fs.NArg() > 0 {
		return &usageError{fmt.Sprintf("%s: unexpected argument %q", fs.Name(), strings.Join(fs.Args(), " "))}
	}
	return nil
}

func cmdDump(args []string) (bool, error) {
	fs := newFlags("dump")
	pid := fs.Int("t", 0, "pid of the process to dump")
	dir := fs.String("o", "", "image directory to create")
	leave := fs.Bool("leave-running", false, "resume the process after the dump instead of killing it")
	sync := fs.Bool("sync", false, "fsync the image before reporting success")
	shell := fs.Bool("shell-job", false, "allow a process attached to a terminal, or whose session lies outside the image")
	locks := fs.Bool("file-locks", false, "save the file locks the processes hold (flock, POSIX and OFD locks) instead of refusing them")
	ipcAll := fs.Bool("ipc-all", false, "dump every SysV IPC object of the IPC namespace, not only the tree's")
	ipcIDs := fs.String("ipc-id", "", "also dump these SysV IPC objects: shm:ID,sem:ID,msg:ID")
	v := fs.Bool("v", false, "verbose: progress, and the whole error chain")
	if err := parse(fs, args); err != nil {
		return false, err
	}
	if *pid <= 0 || *dir == "" {
		return *v, &usageError{"dump: -t PID and -o DIR are required"}
	}
	ids, err := dump.ParseIPCIDs(*ipcIDs)
	if err != nil {
		return *v, &usageError{"dump: --ipc-id: " + err.Error()}
	}
	opt := dump.Options{Pid: *pid, Dir: *dir, LeaveRunning: *leave, Sync: *sync, ShellJob: *shell, IPCAll: *ipcAll, IPCIDs: ids, FileLocks: *locks}
	if *v {
		opt.Log = os.Stderr
	}
	removeStale(*dir, *v)
	// SIGINT and SIGTERM interrupt the dump; it undoes itself (the target
	// runs on as before, nothing stays on disk) and cr exits with an error.
	// Further signals change nothing.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	abort := make(chan struct{})
	opt.Abort = abort
	go func() {
		s := <-sigs
		if *v {
			fmt.Fprintf(os.Stderr, "cr: %v: interrupting the dump\n", s)
		}
		close(abort)
	}()
	res, err := dump.Run(opt)
	if err != nil {
		return *v, err
	}
	if *v {
		fmt.Fprintf(os.Stderr, "dumped pid %d into %s: %d pages, frozen for %v\n", *pid, res.Dir, res.Pages, res.Frozen)
	}
	return *v, nil
}

func cmdShow(args []string) error {
	fs := newFlags("show")
	dir := fs.String("i", "", "image directory")
	js := fs.Bool("json", false, "print the whole image as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *dir == "" {
		return &usageError{"show: -i DIR is required"}
	}
	c, err := files.Load(*dir)
	if err != nil {
		return err
	}
	for _, p := range c.Processes {
		if p.Task.Zombie {
			continue
		}
		if err := image.VerifyPages(*dir, p); err != nil {
			return err
		}
	}
	if err := image.VerifyShmem(*dir, c.Shmem); err != nil {
		return err
	}
	if *js {
		return image.WriteJSON(os.Stdout, c)
	}
	files.WriteSummary(os.Stdout, c)
	return nil
}
