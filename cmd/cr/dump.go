package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/cr-tools/cr/pkg/dump"
)

func cmdDump(args []string) (int, error) {
	c := newCommand("dump", "cr dump -t PID -o DIR [options]",
		`Checkpoint the process tree rooted at PID into the image directory DIR
(created; it must not exist or be empty), then kill the tree, unless
--leave-running or --leave-stopped. Whatever cr cannot save is refused
before anything is written, every reason at once; the tree runs on.
Note: CRIU's -o is its log file; here -o is the image directory (as -D),
and the log file is --log-file.`,
		"cr dump -t 1234 -o /var/tmp/img",
		"cr dump -t 1234 -D /var/tmp/img --leave-running --log-file dump.log -v4")
	pid := c.fs.Int("t", 0, "`PID` of the root of the process tree to dump (required)")
	c.alias("t", "tree")
	dir := c.fs.String("o", "", "image directory `DIR` to create; CRIU's -o is cr's --log-file, and cr dump refuses an -o ending in .log (required)")
	c.alias("o", "D", "images-dir")
	leave := c.fs.Bool("leave-running", false, "resume the tree after the dump instead of killing it")
	c.alias("leave-running", "R")
	stopped := c.fs.Bool("leave-stopped", false, "leave the tree stopped (as by SIGSTOP) after the dump instead of killing it; SIGCONT resumes it")
	c.alias("leave-stopped", "s")
	sync := c.fs.Bool("sync", false, "fsync the image before reporting success")
	locks := c.fs.Bool("file-locks", false, "save the file locks the processes hold (flock, POSIX and OFD locks) instead of refusing them")
	shell := c.fs.Bool("shell-job", false, "allow a process attached to a terminal, or whose session lies outside the image")
	c.alias("shell-job", "j")
	ipcAll := c.fs.Bool("ipc-all", false, "dump every SysV IPC object of the IPC namespace, not only the tree's")
	ipcIDs := c.fs.String("ipc-id", "", "also dump these SysV IPC objects, a `LIST` such as shm:ID,sem:ID,msg:ID")
	ghostLimit := c.fs.String("ghost-limit", "1M", "largest deleted (or O_TMPFILE) file whose contents go into the image, a `SIZE` in bytes or with K, M, G (CRIU's option)")
	extUnix := c.fs.Bool("ext-unix-sk", false, "save unix datagram sockets connected to a socket outside the tree (/dev/log), to reconnect them by path at restore")
	tcpEst := c.fs.Bool("tcp-established", false, "save established TCP connections (TCP repair); without it a process holding one is refused")
	skipInFlight := c.fs.Bool("skip-in-flight", false, "leave behind connections waiting in a listener's accept queue instead of refusing")
	netLock := c.fs.String("network-lock", dump.NetworkLockNFTables, "how the dumped TCP connections are kept quiet until restore, `nftables|skip`: an nf_tables table drops their packets (nftables), or nothing does (skip: leave that to you)")
	stats := c.fs.Bool("display-stats", false, "print the dump's figures (times, pages, MB/s) on stderr; they are always written to the image's stats-dump.json")
	var scripts stringsFlag
	c.fs.Var(&scripts, "action-script", "run `SCRIPT` (with sh -c) at pre-dump and post-dump, with CRIU's environment (CRTOOLS_SCRIPT_ACTION, CRTOOLS_INIT_PID, CRTOOLS_IMAGE_DIR); a failure aborts the dump; repeatable")
	c.logFlags()
	if err := c.parse(args, false); err != nil {
		return 0, err
	}
	if *pid <= 0 || *dir == "" {
		return 0, &usageError{"dump: -t PID and -o DIR are required (see cr dump -h)"}
	}
	if c.set("o") && strings.HasSuffix(*dir, ".log") {
		return 0, &usageError{fmt.Sprintf("dump: -o %s looks like a log file: in cr, -o is the image directory (CRIU's -o is cr's --log-file); use --log-file %s, or -D %s if you do mean an image directory", *dir, *dir, *dir)}
	}
	if *leave && *stopped {
		return 0, &usageError{"dump: --leave-running and --leave-stopped exclude each other"}
	}
	ids, err := dump.ParseIPCIDs(*ipcIDs)
	if err != nil {
		return 0, &usageError{"dump: --ipc-id: " + err.Error()}
	}
	if *netLock != dump.NetworkLockNFTables && *netLock != dump.NetworkLockSkip {
		return 0, &usageError{"dump: --network-lock: want nftables or skip"}
	}
	gl, err := parseSize(*ghostLimit)
	if err != nil {
		return 0, &usageError{"dump: --ghost-limit: " + err.Error()}
	}
	opt := dump.Options{Pid: *pid, Dir: *dir, LeaveRunning: *leave, LeaveStopped: *stopped, Sync: *sync, ShellJob: *shell,
		IPCAll: *ipcAll, IPCIDs: ids, Log: progress(), Notify: actionScripts(scripts, *dir),
		GhostLimit: gl, ExtUnixSk: *extUnix, TCPEstablished: *tcpEst, SkipInFlight: *skipInFlight, NetworkLock: *netLock, FileLocks: *locks}
	removeStale(*dir)
	// SIGINT and SIGTERM interrupt the dump; it undoes itself (the target
	// runs on as before, nothing stays on disk) and cr exits with an error.
	// Further signals change nothing.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case s := <-sigs:
			infof("cr: %v: interrupting the dump", s)
			cancel()
		case <-ctx.Done():
		}
	}()
	// The progress line and --display-stats follow the dump's events.
	m := newMeter("dump")
	opt.Events = m.dumpEvent
	res, err := dump.Run(ctx, opt)
	m.finish()
	if err != nil {
		return 0, err
	}
	infof("dumped pid %d into %s: %d pages, frozen for %v", *pid, res.Dir, res.Pages, res.Frozen)
	for _, e := range res.NeedInherit {
		warnf("pid %d fd %d is %s, whose other end was outside the dumped tree: cr restore will need --inherit-fd fd[N]:%s (N: an fd of cr restore to put there)", e.Pid, e.Fd, e.ID, e.ID)
	}
	if *stats {
		printDumpStats(os.Stderr, res)
		m.printPhases(os.Stderr)
	}
	return 0, nil
}

// parseSize reads a size in bytes with an optional K, M or G suffix
// (powers of 1024), as --ghost-limit takes it (CRIU's option of that name).
func parseSize(s string) (int64, error) {
	mul := int64(1)
	switch strings.ToUpper(s[len(s)-min(1, len(s)):]) {
	case "K":
		mul = 1 << 10
	case "M":
		mul = 1 << 20
	case "G":
		mul = 1 << 30
	}
	if mul != 1 {
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mul {
		return 0, fmt.Errorf("%q is not a size (bytes, or with K, M, G)", s)
	}
	return n * mul, nil
}
