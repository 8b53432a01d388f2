package main

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/cr-tools/cr/pkg/restore"
	"golang.org/x/sys/unix"
)

func cmdRestore(args []string) (int, bool, error) {
	fs := newFlags("restore")
	dir := fs.String("i", "", "image directory")
	detach := fs.Bool("d", false, "detach: exit once the process runs")
	fs.BoolVar(detach, "detach", false, "same as -d")
	pidfile := fs.String("pidfile", "", "write the restored pid to this file")
	force := fs.Bool("force-kernel", false, "restore an image dumped on another kernel release")
	shell := fs.Bool("shell-job", false, "the process was a shell job: give it cr's session, process group and terminal")
	locks := fs.Bool("file-locks", false, "take again the file locks the image holds (dumped with --file-locks)")
	fill := fs.String("fill", "preadv", "how pages reach the process: preadv (the process reads them) or writev")
	var inherit inheritFlag
	fs.Var(&inherit, "inherit-fd", "fd[N]:ID: give the restored processes cr's fd N in place of the external pipe or socket ID (`cr show` lists them); repeatable")
	v := fs.Bool("v", false, "verbose: progress, and the whole error chain")
	if err := parse(fs, args); err != nil {
		return 0, false, err
	}
	if *dir == "" {
		return 0, *v, &usageError{"restore: -i DIR is required"}
	}
	opt := restore.Options{Dir: *dir, ForceKernel: *force, Fill: *fill, ShellJob: *shell, InheritFds: inherit, FileLocks: *locks}
	if *v {
		opt.Log = os.Stderr
	}
	removeStale(*dir, *v)
	// Forward signals from the moment the process exists.
	sigs := make(chan os.Signal, 4)
	if !*detach {
		if *shell {
			// The terminal already sends SIGINT and SIGHUP to the whole
			// foreground group, the restored process included: don't
			// deliver them twice, just don't die of them before it does.
			signal.Ignore(syscall.SIGINT, syscall.SIGQUIT)
			signal.Notify(sigs, syscall.SIGTERM)
		} else {
			signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
		}
	}
	res, err := restore.Run(opt)
	if err != nil {
		return 0, *v, err
	}
	if *v {
		fmt.Fprintf(os.Stderr, "restored pid %d in %v\n", res.Pid, res.Duration)
	}
	if *pidfile != "" {
		if err := os.WriteFile(*pidfile, []byte(strconv.Itoa(res.Pid)+"\n"), 0o644); err != nil {
			unix.Kill(res.Pid, unix.SIGKILL)
			return 0, *v, fmt.Errorf("write pidfile: %w", err)
		}
	}
	if *detach {
		return 0, *v, nil
	}
	go func() {
		for s := range sigs {
			unix.Kill(res.Pid, s.(syscall.Signal))
		}
	}()
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(res.Pid, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, *v, fmt.Errorf("wait for pid %d: %w", res.Pid, err)
		}
		break
	}
	if ws.Signaled() {
		return 128 + int(ws.Signal()), *v, nil
	}
	return ws.ExitStatus(), *v, nil
}

// inheritFlag collects --inherit-fd fd[N]:ID values (CRIU's syntax) into
// restore.Options.InheritFds.
type inheritFlag map[string]int

func (f *inheritFlag) String() string { return "" }

func (f *inheritFlag) Set(v string) error {
	num, id, ok := strings.Cut(v, ":")
	if !ok || !strings.HasPrefix(num, "fd[") || !strings.HasSuffix(num, "]") || id == "" {
		return fmt.Errorf("--inherit-fd %q: want fd[N]:ID, e.g. fd[3]:pipe:[12345]", v)
	}
	n, err := strconv.Atoi(num[3 : len(num)-1])
	if err != nil || n < 0 {
		return fmt.Errorf("--inherit-fd %q: %q is not an fd number", v, num[3:len(num)-1])
	}
	if *f == nil {
		*f = inheritFlag{}
	}
	if _, dup := (*f)[id]; dup {
		return fmt.Errorf("--inherit-fd: %s given twice", id)
	}
	(*f)[id] = n
	return nil
}
