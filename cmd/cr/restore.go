package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/cr-tools/cr/pkg/restore"
	"golang.org/x/sys/unix"
)

func cmdRestore(args []string) (int, error) {
	c := newCommand("restore", "cr restore -i DIR [options]",
		`Restore the process tree saved in the image directory DIR, with the same
pids. The image is checked first (format, checksums, kernel, CPU, files,
free pids); a failure leaves nothing running. Without -d, cr stays the
parent of the restored root, forwards SIGINT, SIGTERM and SIGHUP to it and
exits with its status (128+N if signal N killed it); cr's own failure
before it runs is status 1 with a "cr:" line on stderr.`,
		"cr restore -i /var/tmp/img",
		"cr restore -D /var/tmp/img -d --pidfile /run/app.pid")
	dir := c.fs.String("i", "", "image directory `DIR` (required)")
	c.alias("i", "D", "images-dir")
	detach := c.fs.Bool("d", false, "detach: exit once the process runs")
	c.alias("d", "detach", "restore-detached")
	pidfile := c.fs.String("pidfile", "", "write the restored root's pid to `FILE`")
	force := c.fs.Bool("force-kernel", false, "restore an image dumped on another kernel release")
	shell := c.fs.Bool("shell-job", false, "the process was a shell job: give it cr's session, process group and terminal")
	c.alias("shell-job", "j")
	fill := c.fs.String("fill", "preadv", "how pages reach the process, `MODE`: preadv (the process reads them from the image) or writev (cr writes them)")
	var inherit inheritFlag
	c.fs.Var(&inherit, "inherit-fd", "`fd[N]:ID`: give the restored processes cr's fd N in place of the external pipe or socket ID (`cr show` lists them); repeatable")
	locks := c.fs.Bool("file-locks", false, "take again the file locks the image holds (dumped with --file-locks)")
	tcpClose := c.fs.Bool("tcp-close", false, "restore established TCP connections closed (their peers are gone): the program sees each as ended")
	stopped := c.fs.Bool("leave-stopped", false, "leave the restored processes stopped (as by SIGSTOP); SIGCONT resumes them")
	c.alias("leave-stopped", "s")
	stats := c.fs.Bool("display-stats", false, "print the restore's figures (times, pages, MB/s) on stderr; they are also written to the image's stats-restore.json")
	var scripts stringsFlag
	c.fs.Var(&scripts, "action-script", "run `SCRIPT` (with sh -c) at pre-restore and post-restore (the processes built, not yet running), with CRIU's environment; a failure aborts the restore; repeatable")
	c.logFlags()
	if err := c.parse(args, false); err != nil {
		return 0, err
	}
	if *dir == "" {
		return 0, &usageError{"restore: -i DIR is required (see cr restore -h)"}
	}
	opt := restore.Options{Dir: *dir, ForceKernel: *force, Fill: *fill, ShellJob: *shell, InheritFds: inherit, TCPClose: *tcpClose, FileLocks: *locks,
		LeaveStopped: *stopped, Log: progress(), Notify: actionScripts(scripts, *dir)}
	removeStale(*dir)
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
	// The progress line and --display-stats follow the restore's events.
	m := newMeter("restore")
	opt.Events = m.restoreEvent
	res, err := restore.Run(context.Background(), opt)
	m.finish()
	if err != nil {
		return 0, err
	}
	infof("restored pid %d in %v", res.Pid, res.Duration)
	if *stats {
		printRestoreStats(os.Stderr, res)
		m.printPhases(os.Stderr)
	}
	if *pidfile != "" {
		if err := os.WriteFile(*pidfile, []byte(strconv.Itoa(res.Pid)+"\n"), 0o644); err != nil {
			unix.Kill(res.Pid, unix.SIGKILL)
			return 0, fmt.Errorf("write pidfile: %w", err)
		}
	}
	if *detach {
		return 0, nil
	}
	go func() {
		for s := range sigs {
			unix.Kill(res.Pid, s.(syscall.Signal))
		}
	}()
	ws, err := waitJob(res.Pid, res.Foreground, *shell)
	if err != nil {
		return 0, fmt.Errorf("wait for pid %d: %w", res.Pid, err)
	}
	if ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return ws.ExitStatus(), nil
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
