// Command cr checkpoints and restores Linux processes.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/cr-tools/cr/pkg/image"
)

const usage = `cr checkpoints a running Linux process tree into an image directory and restores it.

Usage:
  cr dump -t PID -o DIR [options]       checkpoint a process tree
  cr restore -i DIR [options]           bring it back, with the same pids
  cr show -i DIR [VIEW] [--json]        inspect an image (views: ps, fds, mems, rss, files, sockets, ipc)
  cr check [-t PID]                     what this machine supports; with -t, whether PID can be dumped
  cr network-unlock -i DIR              remove the network lock of an image that will not be restored
  cr version                            cr's version, the image format, Go, the commit
  cr demo                               checkpoint and restore a counting program

Run 'cr COMMAND -h' for a command's options and examples.

Exit status: 0 success; 1 cr failed or refused (one line on stderr says why);
2 usage error. cr restore without -d exits with the restored program's own
status (128+N if a signal N killed it).
`

// Exit statuses of cr's own outcomes (README "Exit status").
const (
	exitFailure = 1 // the operation failed or was refused
	exitUsage   = 2 // bad command line
)

// commands maps each subcommand to its function, which returns the exit
// status (meaningful when err is nil) or an error.
var commands = map[string]func(args []string) (int, error){
	"dump":    cmdDump,
	"restore": cmdRestore,
	"show":    cmdShow,
	"check":   cmdCheck,
	"version": cmdVersion,
	"demo":    cmdDemo,

	"network-unlock": cmdNetworkUnlock,
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(exitUsage)
	}
	name := os.Args[1]
	switch name {
	case "-h", "--help", "help":
		fmt.Print(usage)
		return
	case "--version", "-version", "-V":
		name = "version"
	}
	run, ok := commands[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "cr: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(exitUsage)
	}
	code, err := run(os.Args[2:])
	if err != nil {
		code = fail(err)
	}
	if logClose != nil {
		logClose()
	}
	os.Exit(code)
}

// fail prints one line for the user on stderr (unless -v0); the log (the
// --log-file, or stderr with -v4) also gets the whole chain. It returns the
// exit status.
func fail(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var se *silentError
	if errors.As(err, &se) {
		return exitFailure // the command printed what went wrong already
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(os.Stderr, "cr: %s\n", ue.msg)
		return exitUsage
	}
	if logLevel >= 1 {
		fmt.Fprintf(os.Stderr, "cr: %v\n", err)
	}
	// (logOut is still stderr when the log file could not be opened.)
	if logOut != os.Stderr && logFile != "" || logLevel >= 4 {
		if logFile != "" && logOut != os.Stderr {
			fmt.Fprintf(logOut, "cr: %v\n", err)
		}
		for e := errors.Unwrap(err); e != nil; e = errors.Unwrap(e) {
			fmt.Fprintf(logOut, "  caused by: %v\n", e)
		}
	}
	return exitFailure
}

// removeStale removes the temporary image directories beside dir that a
// killed cr left (see image.RemoveStale), and says so at -v3. A failure to
// clean up is a warning: it does not stop the command.
func removeStale(dir string) {
	removed, err := image.RemoveStale(dir)
	for _, r := range removed {
		infof("removed %s, left by a cr that was killed", r)
	}
	if err != nil {
		warnf("%v", err)
	}
}

// silentError is a failure the command has reported on stdout already:
// cr exits 1 without another message.
type silentError struct{ err error }

func (e *silentError) Error() string { return e.err.Error() }

type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }
