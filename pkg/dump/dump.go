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
	opt     Options
	pid     int
	tr      *ptrace.Tracer
	threads []*thread // threads[0] is the main thread (tid == pid)
	proc    image.Process
	scratch uintptr // a page of scratch memory in the task while collecting

	fds   []image.Fd
	files []image.File
}

// thread is one seized thread of the target.
type thread struct {
	task *ptrace.Task
	in   *parasite.Injector // set while syscalls are injected into it
	regs *ptrace.Regs       // registers as found (before normalisation)
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
	if err := image.CheckTarget(d.opt.Dir); err != nil {
		return nil, err
	}

	d.tr = ptrace.NewTracer()
	d.tr.Timeout = d.opt.Timeout
	defer d.tr.Close()
	start := time.Now()
	committed := false
	defer func() { err = d.releaseAll(err, committed) }()
	if err := d.seizeAll(); err != nil {
		return nil, err
	}
	d.logf("seized pid %d (%d threads)", pid, len(d.threads))
	// Children may have appeared before the seize took effect.
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
	// Put the target's registers and signal masks back before the commit, so
	// that an image exists only if the target was left as it was found.
	if err := d.releaseInjection(); err != nil {
		return nil, err
	}
	if err := w.Commit(); err != nil {
		return nil, err
	}
	committed = true
	return &Result{Dir: w.Dir, Pages: pages, Frozen: time.Since(start), PagesTime: ptime}, nil
}

// seizeAll seizes every thread, looping until no new thread appears (a
// thread not yet seized may still create one).
func (d *dumper) seizeAll() error {
	pid := d.pid
	main, err := d.tr.Seize(pid, unix.PTRACE_O_SUSPEND_SECCOMP)
	if err != nil {
		return d.seizeError(err)
	}
	d.threads = []*thread{{task: main}}
	seen := map[int]bool{pid: true}
	for {
		tids, err := procfs.Tids(pid)
		if err != nil {
			return fmt.Errorf("process %d: %w", pid, ErrNoProcess)
		}
		added := 0
		for _, tid := range tids {
			if seen[tid] {
				continue
			}
			seen[tid] = true
			t, err := d.tr.Seize(tid, unix.PTRACE_O_SUSPEND_SECCOMP)
			if err != nil {
				var ex *ptrace.ExitedError
				if errors.Is(err, unix.ESRCH) || errors.As(err, &ex) {
					continue // the thread exited meanwhile
				}
				return fmt.Errorf("seize thread %d: %w", tid, err)
			}
			d.threads = append(d.threads, &thread{task: t})
			added++
		}
		if added == 0 {
			return nil
		}
	}
}

func (d *dumper) seizeError(err error) error {
	pid := d.pid
	var ex *ptrace.ExitedError
	switch {
	case errors.Is(err, unix.ESRCH) || errors.As(err, &ex):
		return fmt.Errorf("process %d: %w", pid, ErrNoProcess)
	case errors.Is(err, unix.EPERM) && d.gone():
		// A process that is exiting (a zombie) cannot be seized either.
		return fmt.Errorf("process %d: %w", pid, ErrNoProcess)
	case errors.Is(err, unix.EPERM):
		// EPERM also means "already traced": say so rather than blame privileges.
		// TracerPid is the tracing thread; name its process.
		if s, serr := procfs.ReadStatus(pid); serr == nil && s.Int("TracerPid") != 0 {
			tracer := s.Int("TracerPid")
			if ts, terr := procfs.ReadStatus(int(tracer)); terr == nil && ts.Int("Tgid") != 0 {
				tracer = ts.Int("Tgid")
			}
			return fmt.Errorf("process %d is already traced by process %d (a debugger?); detach it first: %w", pid, tracer, ErrPermission)
		}
		return fmt.Errorf("cannot trace process %d (%v): %w; run cr as root or with CAP_SYS_PTRACE and CAP_CHECKPOINT_RESTORE", pid, err, ErrPermission)
	}
	return fmt.Errorf("seize process %d: %w", pid, err)
}

// releaseInjection unmaps the scratch page and puts every thread's registers
// and signal mask back.
func (d *dumper) releaseInjection() error {
	var first error
	if d.scratch != 0 && len(d.threads) > 0 && d.threads[0].in != nil {
		if _, err := d.threads[0].in.Syscall(unix.SYS_MUNMAP, d.scratch, image.PageSize); err != nil {
			first = fmt.Errorf("unmap scratch page: %w", err)
		}
		d.scratch = 0
	}
	for _, t := range d.threads {
		if t.in == nil {
			continue
		}
		if err := t.in.Release(); err != nil && first == nil {
			first = err
		}
		t.in = nil
	}
	return first
}

// releaseAll lets the target go: running as before after a failure or with
// LeaveRunning, killed after a committed dump.
func (d *dumper) releaseAll(err error, committed bool) error {
	pid := d.pid
	if rerr := d.releaseInjection(); rerr != nil && err == nil {
		err = rerr
	}
	if err != nil && !errors.Is(err, ErrNoProcess) && d.gone() {
		err = fmt.Errorf("process %d vanished during the dump (%v): %w", pid, err, ErrNoProcess)
	}
	if len(d.threads) == 0 {
		return err
	}
	if d.threads[0].task.Exited != nil {
		if err == nil && !committed {
			err = fmt.Errorf("process %d: %w", pid, ErrNoProcess)
		}
		return err
	}
	if err == nil && !d.opt.LeaveRunning && committed {
		unix.Kill(pid, unix.SIGKILL)
		for i := len(d.threads) - 1; i >= 0; i-- {
			d.threads[i].task.Kill()
		}
		d.logf("killed pid %d", pid)
		return nil
	}
	for _, t := range d.threads {
		// Once the image is committed it is complete: a target that was
		// killed meanwhile does not make the dump fail.
		if derr := t.task.Detach(0); derr != nil && err == nil && t.task.Exited == nil && !(committed && d.gone()) {
			err = derr
		}
	}
	return err
}

// gone reports whether the target exited (or is exiting) under us.
func (d *dumper) gone() bool {
	if len(d.threads) > 0 && d.threads[0].task.Exited != nil {
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

// checkTree refuses what needs the process-tree work.
func (d *dumper) checkTree() error {
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
