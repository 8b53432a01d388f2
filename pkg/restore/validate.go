package restore

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/cr-tools/cr/internal/cpu"
	"github.com/cr-tools/cr/pkg/files"
	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/ipc"
	"github.com/cr-tools/cr/pkg/procfs"
	"golang.org/x/sys/unix"
)

// ChangedFileError is a file the image depends on that changed since the
// dump (files.ChangedFileError: the kinds of open file check theirs).
type ChangedFileError = files.ChangedFileError

// PidInUseError says the original PID is taken.
type PidInUseError struct {
	Pid    int
	By     string // comm of the process holding it
	Zombie bool
}

func (e *PidInUseError) Error() string {
	if e.Zombie {
		return fmt.Sprintf("pid %d is still held by a zombie (%s) that its parent has not reaped yet; try again shortly", e.Pid, e.By)
	}
	return fmt.Sprintf("pid %d is in use by another process (%s); the image's processes need their own pids back: wait for it to exit or stop it (or restore on another machine, or in a new pid namespace)", e.Pid, e.By)
}

// ErrKernelMismatch says the image was dumped on another kernel.
var ErrKernelMismatch = errors.New("kernel mismatch")

// ErrCPUMismatch says this CPU lacks register state the image uses.
var ErrCPUMismatch = errors.New("cpu mismatch")

func (t *treeRestore) validate() error {
	c := t.ck
	var u unix.Utsname
	unix.Uname(&u)
	release := strings.TrimRight(string(u.Release[:]), "\x00")
	if c.Inventory.Kernel.Release != release && !t.opt.ForceKernel {
		return fmt.Errorf("image was dumped on kernel %s, this is %s (use --force-kernel to try anyway): %w",
			c.Inventory.Kernel.Release, release, ErrKernelMismatch)
	}
	if c.Inventory.CPU.Arch != "x86_64" {
		return fmt.Errorf("image is for %s, this is x86_64: %w", c.Inventory.CPU.Arch, ErrCPUMismatch)
	}
	if err := checkCPU(c); err != nil {
		return err
	}
	if err := checkPidRange(c); err != nil {
		return err
	}
	if !t.checkOnly {
		// Objects in the way are refused before anything is created.
		var err error
		if t.ipcReplace, err = ipc.Plan(c.IPC); err != nil {
			return err
		}
	}
	root := c.Processes[0]
	if root.Task.Pid != c.Inventory.RootPid || root.Task.Zombie {
		return fmt.Errorf("image is inconsistent: the first process is not the root %d", c.Inventory.RootPid)
	}
	if c.Inventory.Options.ShellJob && !t.opt.ShellJob {
		return fmt.Errorf("pid %d was dumped as a shell job (it had a terminal, or its session lies outside the image): restore it with --shell-job", root.Task.Pid)
	}
	if f := files.HasLocks(c); f != nil && !t.opt.FileLocks {
		return fmt.Errorf("the image holds file locks (%s holds %d): restore it with --file-locks", f.Ident.Path, len(f.Locks))
	}
	in := map[int]*image.Process{}
	for _, p := range c.Processes {
		in[p.Task.Pid] = p
	}
	if in[root.Task.Ppid] != nil {
		return fmt.Errorf("image is inconsistent: the parent %d of the root %d is in it", root.Task.Ppid, root.Task.Pid)
	}
	for _, r := range root.PageMap {
		if r.InParent {
			return fmt.Errorf("image is inconsistent: the root %d has pages in a parent", root.Task.Pid)
		}
	}
	seen := map[int]bool{}
	for i, p := range c.Processes {
		tk := &p.Task
		if seen[tk.Pid] {
			return fmt.Errorf("image is inconsistent: pid %d appears twice", tk.Pid)
		}
		seen[tk.Pid] = true
		if i > 0 {
			// Parents come before their children (so every process is
			// reachable from the root, and there is no cycle).
			parent := in[tk.Ppid]
			if parent == nil || parent.Task.Zombie || !seen[tk.Ppid] || tk.Ppid == tk.Pid {
				return fmt.Errorf("image is inconsistent: the parent %d of pid %d is not in it before it", tk.Ppid, tk.Pid)
			}
		}
		if !t.opt.ShellJob {
			if in[tk.Sid] == nil {
				return fmt.Errorf("pid %d belongs to session %d, which is not in the image (e.g. it was started from a shell): restore it with --shell-job to join cr's session", tk.Pid, tk.Sid)
			}
			if in[tk.Pgid] == nil {
				return fmt.Errorf("pid %d belongs to process group %d, which is not in the image: restore it with --shell-job to join cr's process group", tk.Pid, tk.Pgid)
			}
		}
		if err := t.checkPid(tk.Pid); err != nil {
			return err
		}
		if tk.Zombie {
			continue
		}
		if err := t.validateProcess(p); err != nil {
			return err
		}
	}
	// Open files are reopened by path; they may have changed (as in the
	// original checkpoint/restart demo), but must exist.
	for i := range c.Files {
		f := &c.Files[i]
		if f.External == "" || t.checkOnly {
			continue // (which descriptors replace them is the restore's business)
		}
		fd, err := t.Inherited(f)
		if err != nil {
			return err
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			return fmt.Errorf("%s is to be replaced by fd %d of cr, which is not open: %w", f.External, fd, err)
		}
	}
	for i := range c.Files {
		f := &c.Files[i]
		if f.External != "" {
			continue
		}
		if f.Ident.Proc != nil {
			// A procfs path of a process of the image: it exists once the
			// process does.
			if err := files.CheckProcPath(in, f.Ident.Proc); err != nil {
				return fmt.Errorf("open file %s (file %d): %w", f.Ident.Path, f.ID, err)
			}
			continue
		}
		// What the kind needs of this machine (a path to reopen, a
		// terminal); kinds made anew have nothing to find.
		if k, ok := files.ByType(f.Type).(files.Checker); ok {
			if err := k.Check(t, f); err != nil {
				return err
			}
		}
	}
	return nil
}

// validateProcess checks one live process of the image.
func (t *treeRestore) validateProcess(p *image.Process) (err error) {
	tk := &p.Task
	if len(p.Threads) == 0 || p.Threads[0].Tid != tk.Pid {
		return fmt.Errorf("image is inconsistent: the first thread of pid %d is not its main thread", tk.Pid)
	}
	for _, th := range p.Threads {
		if th.Tid != tk.Pid {
			if err := t.checkPid(th.Tid); err != nil {
				return err
			}
		}
	}
	if t.creds == nil {
		if t.creds, err = ownCreds(); err != nil {
			return err
		}
	}
	if err := checkCreds(&tk.Creds, t.creds); err != nil {
		return fmt.Errorf("pid %d: %w", tk.Pid, err)
	}
	if t.creds.nnp && !tk.NoNewPrivs {
		return fmt.Errorf("pid %d: cr runs with no_new_privs, which the process it starts inherits and cannot drop, and the image's process did not have it: run cr without no_new_privs", tk.Pid)
	}
	// The process starts with cr's fd limit; only CAP_SYS_RESOURCE raises
	// the hard limit.
	var nofile unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &nofile); err != nil {
		return err
	}
	if plan := PlanFds(p.Fds); uint64(plan.Slots) > nofile.Max && !t.creds.has(capSysResource) {
		return fdLimitError(tk.Pid, plan, nofile.Max)
	}
	// Files the address space maps must be exactly what was dumped.
	if p.MM.ExeGhost == 0 { // a deleted one is made from the image
		if err := checkIdent(&p.MM.Exe, "the executable"); err != nil {
			return err
		}
	}
	seen := map[string]bool{}
	for _, v := range p.VMAs {
		if v.File == nil || seen[v.File.Path] {
			continue
		}
		seen[v.File.Path] = true
		if err := checkIdent(v.File, "mapped file"); err != nil {
			return err
		}
	}
	for _, x := range []*image.FileIdent{&p.FS.Cwd, &p.FS.Root} {
		if x.Proc != nil {
			in := map[int]*image.Process{}
			for _, q := range t.ck.Processes {
				in[q.Task.Pid] = q
			}
			if err := files.CheckProcPath(in, x.Proc); err != nil {
				return fmt.Errorf("directory %s: %w", x.Path, err)
			}
			continue
		}
		if _, err := os.Stat(x.Path); err != nil {
			return fmt.Errorf("directory %s: %w", x.Path, err)
		}
	}
	return nil
}

func checkIdent(id *image.FileIdent, what string) error {
	var st unix.Stat_t
	if err := unix.Stat(id.Path, &st); err != nil {
		return fmt.Errorf("%s %s: %w", what, id.Path, err)
	}
	switch {
	case st.Dev != id.Dev || st.Ino != id.Ino:
		return &ChangedFileError{Path: id.Path, What: "it was replaced by another file"}
	case st.Size != id.Size:
		return &ChangedFileError{Path: id.Path, What: fmt.Sprintf("size %d, was %d", st.Size, id.Size)}
	case st.Mtim.Nano() != id.MtimeNs:
		return &ChangedFileError{Path: id.Path, What: "it was modified"}
	}
	return nil
}

// checkPidRange refuses, before anything is created, an image with a pid or
// tid that this system cannot give: clone3's set_tid accepts 1..pid_max-1
// (kernel/pid.c alloc_pid: EINVAL from pid_max on), and 0 would let the
// kernel pick any pid.
func checkPidRange(c *image.Checkpoint) error {
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		return fmt.Errorf("read pid_max: %w", err)
	}
	pidMax, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("read pid_max: %q: %w", b, err)
	}
	check := func(id int, what string) error {
		if id < 1 || id >= pidMax {
			return fmt.Errorf("%s is outside the pids this system gives (1 to %d: kernel.pid_max is %d)", what, pidMax-1, pidMax)
		}
		return nil
	}
	for _, p := range c.Processes {
		if err := check(p.Task.Pid, fmt.Sprintf("the image's pid %d", p.Task.Pid)); err != nil {
			return err
		}
		for _, th := range p.Threads {
			if err := check(th.Tid, fmt.Sprintf("thread %d of the image's pid %d", th.Tid, p.Task.Pid)); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkPid makes sure pid is free, waiting a bounded time for a zombie.
func (t *treeRestore) checkPid(pid int) error {
	if t.checkOnly {
		return nil // the dumped process still holds it (see Check)
	}
	start := time.Now()
	deadline := start.Add(t.opt.PidWait)
	for waited := false; ; waited = true {
		st, err := procfs.ReadStat(pid)
		if err != nil {
			if errors.Is(err, procfs.ErrNoProcess) {
				if waited {
					t.logf("pid %d was freed after %v", pid, time.Since(start).Round(time.Millisecond))
				}
				return nil
			}
			return err
		}
		e := &PidInUseError{Pid: pid, By: st.Comm, Zombie: st.State == 'Z'}
		if !e.Zombie || time.Now().After(deadline) {
			return e
		}
		if !waited {
			t.logf("pid %d is held by a zombie (%s) its parent has not reaped yet: waiting up to %v", pid, st.Comm, t.opt.PidWait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ownTerminal names cr's terminal: the first of fds 0-2 that is one, or the
// controlling terminal.
func ownTerminal() (string, error) {
	for fd := 0; fd <= 2; fd++ {
		if _, err := unix.IoctlGetTermios(fd, unix.TCGETS); err == nil {
			if p, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd)); err == nil && strings.HasPrefix(p, "/dev/") {
				return p, nil
			}
		}
	}
	if f, err := os.Open("/dev/tty"); err == nil {
		f.Close()
		return "/dev/tty", nil
	}
	return "", errors.New("cr has no terminal to give the restored process; run it from a terminal")
}

// checkCPU refuses an image whose register state or code this machine
// cannot carry on (docs/DESIGN.md, "CPU compatibility"): a CPUID feature
// flag of the compared subset that the dumping CPU had and this one lacks,
// an XSAVE component the image enabled that this machine does not and
// that may not be dropped, or a thread whose state does not fit this
// machine's layout. A format 1.0 image (raw XSAVE areas) restores only
// where the layout is the one it was dumped with.
func checkCPU(c *image.Checkpoint) error {
	inv := &c.Inventory.CPU
	host, err := cpu.HostLayout()
	if err != nil {
		return fmt.Errorf("this machine's XSAVE layout: %w", err)
	}
	if missing := cpu.MissingFeatures(inv.Leaves(), cpu.HostLeaves()); len(missing) > 0 {
		return fmt.Errorf("the image was dumped on a CPU with %s, which this CPU lacks (programs pick code paths for them at start-up): %w",
			strings.Join(missing, ", "), ErrCPUMismatch)
	}
	for _, p := range c.Processes {
		if p.Task.Zombie {
			continue
		}
		var states []*cpu.XState
		for i := range p.Threads {
			th := &p.Threads[i]
			if th.XState == nil {
				// Format 1.0: the area is in the dumping machine's layout,
				// which the image does not describe.
				if inv.XFeatures != host.XCR0 || inv.XSaveSize != host.Size || len(th.XSave) != host.Size {
					return fmt.Errorf("thread %d of pid %d: the image (format %d.%d) holds its XSAVE area in the layout of the machine that dumped it (features %#x, %d bytes), this machine's is %#x, %d bytes: restore it on that machine: %w",
						th.Tid, p.Task.Pid, c.Inventory.FormatMajor, c.Inventory.FormatMinor, inv.XFeatures, inv.XSaveSize, host.XCR0, host.Size, ErrCPUMismatch)
				}
				s, err := host.Split(th.XSave)
				if err != nil {
					return fmt.Errorf("image is inconsistent: thread %d of pid %d: %w", th.Tid, p.Task.Pid, err)
				}
				states = append(states, s)
				continue
			}
			s := th.XState.CPU(inv.XFeatures)
			if _, err := host.Build(s); err != nil {
				return fmt.Errorf("thread %d of pid %d: %w: %w", th.Tid, p.Task.Pid, err, ErrCPUMismatch)
			}
			states = append(states, s)
		}
		if m := host.Unmet(inv.XFeatures, p.Task.XCompPerm, states); m != 0 {
			return fmt.Errorf("pid %d uses CPU register state this machine does not enable: %s (XSAVE features %#x; image %#x, here %#x): %w",
				p.Task.Pid, cpu.ComponentNames(m), m, inv.XFeatures, host.XCR0, ErrCPUMismatch)
		}
	}
	return nil
}

// xsaveArea is the XSAVE area of an image thread in this machine's layout,
// for PTRACE_SETREGSET NT_X86_XSTATE (checkCPU has accepted it).
func xsaveArea(c *image.Checkpoint, th *image.Thread) ([]byte, error) {
	if th.XState == nil {
		return th.XSave, nil // format 1.0, dumped in this very layout
	}
	host, err := cpu.HostLayout()
	if err != nil {
		return nil, err
	}
	return host.Build(th.XState.CPU(c.Inventory.CPU.XFeatures))
}
