package dump

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/memdump"
	"github.com/cr-tools/cr/pkg/parasite"
	"github.com/cr-tools/cr/pkg/procfs"
	"github.com/cr-tools/cr/pkg/ptrace"
	"golang.org/x/sys/unix"
)

// Version is cr's version, recorded in every image.
const Version = "0.1.0"

// Options configure a dump.
type Options struct {
	Pid          int
	Dir          string
	LeaveRunning bool          // resume the target after the dump instead of killing it
	ShellJob     bool          // allow a terminal and a session or group outside the image
	Sync         bool          // fsync the image before reporting success
	Timeout      time.Duration // bound for every wait on the target (default 10 s)
	Log          io.Writer     // progress messages (-v); nil for none
}

// Result describes a finished dump.
type Result struct {
	Dir       string
	Pages     uint64        // pages saved
	Frozen    time.Duration // how long the target was stopped
	PagesTime time.Duration // time spent copying pages
}

// Run checkpoints one process into opt.Dir.
func Run(opt Options) (*Result, error) {
	if opt.Timeout == 0 {
		opt.Timeout = 10 * time.Second
	}
	d := &dumper{opt: opt, pid: opt.Pid}
	res, err := d.run()
	if err != nil {
		return nil, err
	}
	return res, nil
}

type dumper struct {
	opt  Options
	pid  int
	task *ptrace.Task
	in   *parasite.Injector
	proc image.Process
	regs *ptrace.Regs // registers as found (before normalisation)

	fds   []image.Fd
	files []image.File
}

func (d *dumper) logf(format string, args ...any) {
	if d.opt.Log != nil {
		fmt.Fprintf(d.opt.Log, format+"\n", args...)
	}
}

func (d *dumper) run() (res *Result, err error) {
	pid := d.pid
	st, err := procfs.ReadStat(pid)
	if err != nil {
		if errors.Is(err, procfs.ErrNoProcess) {
			return nil, fmt.Errorf("process %d: %w", pid, ErrNoProcess)
		}
		return nil, err
	}
	if st.State == 'Z' || st.State == 'X' {
		return nil, fmt.Errorf("process %d is a zombie: %w", pid, ErrNoProcess)
	}
	if pid == os.Getpid() {
		return nil, fmt.Errorf("process %d is cr itself", pid)
	}
	if err := d.checkTree(); err != nil {
		return nil, err
	}

	tr := ptrace.NewTracer()
	tr.Timeout = d.opt.Timeout
	defer tr.Close()
	start := time.Now()
	d.task, err = tr.Seize(pid, unix.PTRACE_O_SUSPEND_SECCOMP)
	if err != nil {
		var ex *ptrace.ExitedError
		switch {
		case errors.Is(err, unix.ESRCH) || errors.As(err, &ex):
			return nil, fmt.Errorf("process %d: %w", pid, ErrNoProcess)
		case errors.Is(err, unix.EPERM) && d.gone():
			// A process that is exiting (a zombie) cannot be seized either.
			return nil, fmt.Errorf("process %d: %w", pid, ErrNoProcess)
		case errors.Is(err, unix.EPERM):
			// EPERM also means "already traced": say so rather than blame privileges.
			// TracerPid is the tracing thread; name its process.
			if s, serr := procfs.ReadStatus(pid); serr == nil && s.Int("TracerPid") != 0 {
				tracer := s.Int("TracerPid")
				if ts, terr := procfs.ReadStatus(int(tracer)); terr == nil && ts.Int("Tgid") != 0 {
					tracer = ts.Int("Tgid")
				}
				return nil, fmt.Errorf("process %d is already traced by process %d (a debugger?); detach it first: %w", pid, tracer, ErrPermission)
			}
			return nil, fmt.Errorf("cannot trace process %d (%v): %w; run cr as root or with CAP_SYS_PTRACE and CAP_CHECKPOINT_RESTORE", pid, err, ErrPermission)
		}
		return nil, fmt.Errorf("seize process %d: %w", pid, err)
	}
	d.logf("seized pid %d", pid)
	committed := false
	defer func() {
		if d.in != nil {
			if rerr := d.in.Release(); rerr != nil && err == nil {
				err = rerr
			}
		}
		if err != nil && !errors.Is(err, ErrNoProcess) && d.gone() {
			err = fmt.Errorf("process %d vanished during the dump (%v): %w", pid, err, ErrNoProcess)
		}
		if d.task.Exited != nil {
			if err == nil && !committed {
				err = fmt.Errorf("process %d: %w", pid, ErrNoProcess)
			}
			return
		}
		if err == nil && !d.opt.LeaveRunning && committed {
			d.task.Kill()
			d.logf("killed pid %d", pid)
			return
		}
		// Once the image is committed it is complete: a target that was
		// killed meanwhile does not make the dump fail.
		if derr := d.task.Detach(0); derr != nil && err == nil && !(committed && d.gone()) {
			err = derr
		}
	}()
	// Threads or children may have appeared before the seize took effect.
	if err := d.checkTree(); err != nil {
		return nil, err
	}

	if err := d.collect(); err != nil {
		return nil, err
	}

	w, err := image.Create(d.opt.Dir, d.opt.Sync)
	if err != nil {
		return nil, err
	}
	defer func() {
		if !committed {
			w.Abort()
		}
	}()
	pw, err := w.Pages(pid)
	if err != nil {
		return nil, err
	}
	pstart := time.Now()
	runs, err := memdump.ScanVMAs(pid, d.proc.VMAs)
	if err != nil {
		return nil, fmt.Errorf("scan pages of pid %d: %w", pid, err)
	}
	d.proc.PageMap, err = memdump.DumpPages(pid, runs, d.proc.VMAs, pw, memdump.DumpOptions{})
	if err != nil {
		return nil, err
	}
	ptime := time.Since(pstart)
	var pages uint64
	for _, r := range d.proc.PageMap {
		pages += r.Pages
	}
	d.logf("saved %d pages (%d MiB) in %v", pages, pages*image.PageSize>>20, ptime)

	ck := &image.Checkpoint{
		Inventory: d.inventory(),
		Processes: []*image.Process{&d.proc},
	}
	ck.Files, d.proc.Fds = d.files, d.fds
	if err := w.WriteMeta(ck); err != nil {
		return nil, err
	}
	// Put the target's registers and signal mask back before the commit, so
	// that an image exists only if the target was left as it was found.
	if d.in != nil {
		in := d.in
		d.in = nil
		if err := in.Release(); err != nil {
			return nil, err
		}
	}
	if err := w.Commit(); err != nil {
		return nil, err
	}
	committed = true
	return &Result{Dir: w.Dir, Pages: pages, Frozen: time.Since(start), PagesTime: ptime}, nil
}

// gone reports whether the target exited (or is exiting) under us.
func (d *dumper) gone() bool {
	if d.task != nil && d.task.Exited != nil {
		return true
	}
	st, err := procfs.ReadStatus(d.pid)
	if err != nil {
		return true
	}
	state := st.Fields["State"]
	killed := (st.Hex("SigPnd")|st.Hex("ShdPnd"))&(1<<(unix.SIGKILL-1)) != 0
	return killed || strings.HasPrefix(state, "Z") || strings.HasPrefix(state, "X")
}

// checkTree refuses what needs the threads and process-tree work.
func (d *dumper) checkTree() error {
	tids, err := procfs.Tids(d.pid)
	if err != nil {
		return fmt.Errorf("process %d: %w", d.pid, ErrNoProcess)
	}
	if len(tids) > 1 {
		return &UnsupportedError{d.pid, fmt.Sprintf("the process has %d threads (multi-threaded processes)", len(tids))}
	}
	kids, err := procfs.Children(d.pid)
	if err != nil {
		return err
	}
	if len(kids) > 0 {
		return &UnsupportedError{d.pid, fmt.Sprintf("the process has child process %d (process trees)", kids[0])}
	}
	return nil
}

func (d *dumper) inventory() image.Inventory {
	var u unix.Utsname
	unix.Uname(&u)
	str := func(b []byte) string { return strings.TrimRight(string(b), "\x00") }
	xs := d.proc.Threads[0].XSave
	return image.Inventory{
		FormatMajor: image.FormatMajor, FormatMinor: image.FormatMinor,
		CRVersion: Version, DumpTime: time.Now().UTC().Format(time.RFC3339Nano),
		Options: image.Options{LeaveRunning: d.opt.LeaveRunning, ShellJob: d.opt.ShellJob},
		Kernel:  image.Kernel{Sysname: str(u.Sysname[:]), Release: str(u.Release[:]), Version: str(u.Version[:]), Machine: str(u.Machine[:])},
		CPU:     image.CPU{Arch: "x86_64", XFeatures: XFeatures(xs), XSaveSize: len(xs)},
		RootPid: d.pid, Pids: []int{d.pid},
	}
}

// XFeatures returns the feature mask (XCR0) that the kernel stores in the
// software-reserved bytes of a ptrace XSAVE area, at offset 464 (the same
// offset gdb reads as I386_LINUX_XSAVE_XCR0_OFFSET).
func XFeatures(xsave []byte) uint64 {
	if len(xsave) < 512 {
		return 0
	}
	return binary.LittleEndian.Uint64(xsave[464:])
}
