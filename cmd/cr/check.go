package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cr-tools/cr/pkg/dump"
	"os"
	"strings"

	"github.com/cr-tools/cr/internal/cpu"
	"github.com/cr-tools/cr/pkg/memdump"
	"golang.org/x/sys/unix"
)

// cmdCheck probes what cr needs from this kernel and says what is missing;
// with -t PID it is the pre-flight of a dump of that tree instead.
func cmdCheck(args []string) (int, error) {
	c := newCommand("check", "cr check [-t PID [--shell-job] [--tcp-established] [--skip-in-flight] [--file-locks]] [-i DIR ...]",
		`Without -t: probe what cr needs from this kernel and CPU and say what is
missing (status 1 if something is). With -t PID: the pre-flight of a dump
of that tree: freeze it for a moment, list every reason a dump would be
refused (status 1) or say it would go through (0); nothing is written.`,
		"cr check",
		"cr check -t 1234")
	pid := c.fs.Int("t", 0, "pre-flight: list every reason a dump of the tree rooted at `PID` would be refused (freezes it for a moment, writes nothing)")
	c.alias("t", "tree")
	shell := c.fs.Bool("shell-job", false, "with -t: as cr dump --shell-job would")
	c.alias("shell-job", "j")
	ghostLimit := c.fs.String("ghost-limit", "1M", "with -t: as cr dump --ghost-limit would, a `SIZE` in bytes or with K, M, G")
	extUnix := c.fs.Bool("ext-unix-sk", false, "with -t: as cr dump --ext-unix-sk would")
	ipcAll := c.fs.Bool("ipc-all", false, "with -t: as cr dump --ipc-all would")
	ipcIDs := c.fs.String("ipc-id", "", "with -t: as cr dump --ipc-id would, a `LIST` such as shm:ID,sem:ID,msg:ID")
	tcpEst := c.fs.Bool("tcp-established", false, "with -t: as cr dump --tcp-established would")
	skipInFlight := c.fs.Bool("skip-in-flight", false, "with -t: as cr dump --skip-in-flight would")
	locks := c.fs.Bool("file-locks", false, "with -t: as cr dump --file-locks would")
	var dirs listFlag
	c.fs.Var(&dirs, "i", "an image directory `DIR` whose network lock is expected (repeatable): says which image names each lock table")
	c.logFlags()
	if err := c.parse(args, false); err != nil {
		return 0, err
	}
	if *pid != 0 {
		gl, err := parseSize(*ghostLimit)
		if err != nil {
			return 0, &usageError{"check: --ghost-limit: " + err.Error()}
		}
		ids, err := dump.ParseIPCIDs(*ipcIDs)
		if err != nil {
			return 0, &usageError{"check: --ipc-id: " + err.Error()}
		}
		return 0, preflight(dump.Options{Pid: *pid, ShellJob: *shell, TCPEstablished: *tcpEst, SkipInFlight: *skipInFlight, FileLocks: *locks,
			GhostLimit: gl, ExtUnixSk: *extUnix, IPCAll: *ipcAll, IPCIDs: ids})
	}
	var u unix.Utsname
	unix.Uname(&u)
	fmt.Printf("kernel %s\n", strings.TrimRight(string(u.Release[:]), "\x00"))
	printCPU()
	failed := 0
	report := func(name string, err error) {
		if err != nil {
			failed++
			fmt.Printf("  FAIL %-38s %v\n", name, err)
		} else {
			fmt.Printf("  ok   %s\n", name)
		}
	}
	report("root (CAP_SYS_PTRACE, CAP_CHECKPOINT_RESTORE)", func() error {
		if os.Geteuid() != 0 {
			return fmt.Errorf("cr runs as uid %d; dump and restore need root", os.Geteuid())
		}
		return nil
	}())
	report("ptrace allowed (Yama)", func() error {
		b, err := os.ReadFile("/proc/sys/kernel/yama/ptrace_scope")
		if err == nil && strings.TrimSpace(string(b)) == "3" {
			return fmt.Errorf("kernel.yama.ptrace_scope=3 forbids ptrace")
		}
		return nil
	}())
	report("PAGEMAP_SCAN (Linux 6.7)", func() error {
		s, err := memdump.NewScanner(os.Getpid())
		if err != nil {
			return err
		}
		defer s.Close()
		buf := make([]byte, 4096)
		buf[0] = 1
		_, err = s.Scan(uint64(ptrOf(buf))&^4095, uint64(ptrOf(buf))&^4095+4096, nil)
		return err
	}())
	report("pidfd_open", func() error {
		fd, err := unix.PidfdOpen(os.Getpid(), 0)
		if err == nil {
			unix.Close(fd)
		}
		return err
	}())
	report("process_vm_readv", func() error {
		a, b := []byte{42}, []byte{0}
		l := []unix.Iovec{{Base: &b[0], Len: 1}}
		r := []unix.RemoteIovec{{Base: ptrOf(a), Len: 1}}
		_, err := unix.ProcessVMReadv(os.Getpid(), l, r, 0)
		return err
	}())
	report("clone3 with set_tid (Linux 5.5)", func() error {
		var maj, min int
		fmt.Sscanf(strings.TrimRight(string(u.Release[:]), "\x00"), "%d.%d", &maj, &min)
		if maj < 5 || maj == 5 && min < 5 {
			return fmt.Errorf("kernel too old")
		}
		return nil
	}())
	report("nf_tables (network lock)", listLocks(dirs))
	if failed > 0 {
		return 0, fmt.Errorf("%d check(s) failed: cr cannot work fully on this machine", failed)
	}
	fmt.Println("looks good")
	return 0, nil
}

// printCPU shows what an image dumped here records about the CPU, and what
// a restoring machine must have: the XSAVE components with their offsets
// and sizes (CPUID leaf 0xd), and the compared feature flags.
func printCPU() {
	fmt.Printf("cpu %s, xsave features %#x, xsave area %d bytes\n", cpu.Vendor(cpu.CPUID), cpu.XCR0(), cpu.XSaveSize())
	l, err := cpu.HostLayout()
	if err != nil {
		fmt.Printf("  xsave layout: %v\n", err)
	} else {
		fmt.Printf("  xsave components (offset+size): %s\n", cpu.DescribeComponents(l.Components))
	}
	fmt.Printf("  cpu features a restoring machine needs: %s\n", strings.Join(cpu.FeatureNames(cpu.HostLeaves()), " "))
}

// preflight runs a dump of pid that stops before anything is injected or
// written (dump.Options.CheckOnly) and prints every reason it would be
// refused, one per line, or that it would go through.
func preflight(opt dump.Options) error {
	pid := opt.Pid
	opt.CheckOnly, opt.Log = true, progress()
	res, err := dump.Run(context.Background(), opt)
	var re *dump.RefusedError
	if errors.As(err, &re) {
		if len(re.Reasons) == 1 {
			fmt.Printf("pid %d: a dump would be refused, for 1 reason:\n", pid)
		} else {
			fmt.Printf("pid %d: a dump would be refused, for %d reasons:\n", pid, len(re.Reasons))
		}
		for _, r := range re.Reasons {
			fmt.Printf("  %v\n", r)
		}
		return &silentError{fmt.Errorf("pid %d cannot be dumped", pid)}
	}
	if err != nil {
		return err
	}
	fmt.Printf("pid %d: a dump would go through (the tree was frozen for %v)\n", pid, res.Frozen.Round(10*time.Microsecond))
	for _, e := range res.NeedInherit {
		fmt.Printf("  note: pid %d fd %d is %s, whose other end is outside the tree: cr restore will need --inherit-fd fd[N]:%s\n", e.Pid, e.Fd, e.ID, e.ID)
	}
	return nil
}
