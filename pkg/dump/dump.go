package dump

import (
	"context"
	"errors"
	"fmt"
	"github.com/cr-tools/cr/pkg/files"
	"io"
	"os"
	"strings"
	"time"

	"github.com/cr-tools/cr/internal/cpu"
	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/memdump"
	"github.com/cr-tools/cr/pkg/parasite"
	"github.com/cr-tools/cr/pkg/procfs"
	"github.com/cr-tools/cr/pkg/ptrace"
	"golang.org/x/sys/unix"
)

// Version is cr's version, recorded in every image.
const Version = image.CRVersion

// Options configure a dump.
type Options struct {
	Pid          int
	Dir          string
	LeaveRunning bool // resume the target after the dump instead of killing it
	ShellJob     bool // allow a terminal and a session or group outside the image
	Sync         bool // fsync the image before reporting success
	// FileLocks saves the file locks the tree holds (flock, POSIX and OFD
	// locks: --file-locks, CRIU's name) instead of refusing them.
	FileLocks bool
	// IPCAll dumps every SysV IPC object of the namespace (--ipc-all),
	// IPCIDs names objects to dump besides the ones the tree attaches or
	// used last (--ipc-id); see selectIPC and docs/DESIGN.md.
	IPCAll bool
	IPCIDs []IPCID
	// GhostLimit is the largest deleted (or O_TMPFILE) file whose
	// contents the image takes, in bytes (--ghost-limit; 0: 1 MiB,
	// files.DefaultGhostLimit); a larger one is refused.
	GhostLimit int64
	// ExtUnixSk saves a unix datagram socket connected to a named socket
	// outside the tree (syslog's /dev/log) to be reconnected by path at
	// restore (--ext-unix-sk, CRIU's name); without it such a socket is
	// refused.
	ExtUnixSk bool
	// TCPEstablished saves established TCP connections (--tcp-established,
	// CRIU's name); without it a process holding one is refused.
	// SkipInFlight leaves behind the connections waiting in a listener's
	// accept queue (--skip-in-flight) instead of refusing the listener.
	// NetworkLock is "nftables" (the default, "") or "skip" (no lock: the
	// caller keeps the connections' packets away). See netlock.go.
	TCPEstablished bool
	SkipInFlight   bool
	NetworkLock    string
	// CheckOnly is the pre-flight (cr check -t PID): freeze the tree, read
	// what /proc tells of it and report every reason a dump would be
	// refused (a *RefusedError), then let it go as it was. Nothing is
	// written, nothing is injected; Dir is not used.
	CheckOnly bool
	Timeout   time.Duration // bound for every wait on the target (default 10 s)
	Log       io.Writer     // progress messages (-v); nil for none
	// Abort, once closed, interrupts the dump: it stops between phases
	// and inside the page copy, puts every process back as it was found,
	// removes what it wrote and returns an error wrapping ErrInterrupted.
	// A dump already committed (the image in place) is not undone. cmd/cr
	// closes it on SIGINT and SIGTERM.
	Abort <-chan struct{}
	// LeaveStopped leaves every process of the tree stopped (as by
	// SIGSTOP) after the dump instead of killing it (CRIU's
	// --leave-stopped); a SIGCONT resumes it.
	LeaveStopped bool
	// Notify, if set, is called at CRIU's action-script points (Action*):
	// ActionPreDump before the tree is frozen, ActionPostDump once the
	// image is complete and in place while the tree is still frozen. An
	// error aborts the dump: before the freeze nothing is touched; after
	// post-dump the tree runs on as before (the image stays, as CRIU's
	// does). pid is the root of the tree.
	Notify func(action string, pid int) error
	// Events, if set, is called at every step of the dump (Event, Phase),
	// one call at a time and in order, from Run's goroutines: it must
	// return quickly and not call back into the dump. cmd/cr draws its
	// progress line and --display-stats from it.
	Events func(Event)
}

// Result describes a finished dump.
type Result struct {
	Dir       string
	Pages     uint64        // pages saved
	Frozen    time.Duration // how long the target was stopped
	PagesTime time.Duration // time spent copying pages
	CheckTime time.Duration // time spent reading the image back (restore.Check) before the commit
	// Figures for --display-stats and stats-dump.json (image.DumpStats).
	FreezeTime    time.Duration // seizing every thread of the tree
	CollectTime   time.Duration // reading the state: /proc and injected syscalls
	PagesScanned  uint64        // pages of the mappings whose pages are saved
	PagesInParent uint64        // pages shared copy-on-write with the parent, stored there
	Bytes         int64         // size of the image's files
	// NeedInherit lists the external descriptors (a pipe or socket whose
	// other end was outside the tree) that a process held at an fd other
	// than 0, 1 and 2: restore refuses the image unless the caller gives
	// a replacement for each (restore.Options.InheritFds, --inherit-fd).
	// Set by a pre-flight too.
	NeedInherit []ExternalFd
}

// ExternalFd is an fd of a dumped process holding an external file.
type ExternalFd struct {
	Pid, Fd int
	ID      string // "pipe:[INO]", "socket:[INO]": what --inherit-fd names
}

// needInherit lists the external files held at fds above 2 (Result.NeedInherit).
func (t *tree) needInherit() []ExternalFd {
	ext := map[int]string{}
	for _, f := range t.files.Files {
		if f.External != "" {
			ext[f.ID] = f.External
		}
	}
	if len(ext) == 0 {
		return nil
	}
	low := map[string]bool{} // held at 0-2 by some process: restore takes cr's own
	var out []ExternalFd
	for _, p := range t.procs {
		for _, fd := range p.proc.Fds {
			if id := ext[fd.FileID]; id != "" {
				if fd.Fd <= 2 {
					low[id] = true
				} else {
					out = append(out, ExternalFd{p.pid, fd.Fd, id})
				}
			}
		}
	}
	kept := out[:0]
	for _, e := range out {
		if !low[e.ID] {
			kept = append(kept, e)
		}
	}
	return kept
}

// Run checkpoints the process tree rooted at opt.Pid into opt.Dir.
//
// Unless LeaveRunning or LeaveStopped, the tree is killed once the image is
// committed; cr, their tracer, reaps them (so a caller that started the
// root gets only an error from its own wait).
//
// Cancelling ctx (or closing opt.Abort) interrupts the dump as SIGINT does
// in cmd/cr: it stops between phases and inside the page copy, puts every
// process back as it was found (running, untraced, its registers and
// memory as before), removes what it wrote, and returns an error wrapping
// ErrInterrupted and ctx.Err(). Once the image is committed (the Verified
// event) the dump completes; a later cancellation changes nothing.
func Run(ctx context.Context, opt Options) (*Result, error) {
	if opt.Timeout == 0 {
		opt.Timeout = 10 * time.Second
	}
	if opt.Dir == "" && !opt.CheckOnly {
		return nil, errors.New("dump: Options.Dir (the image directory to create) is required")
	}
	if ctx == nil {
		ctx = context.Background()
	}
	abort, release := abortOn(ctx, opt.Abort)
	defer release()
	opt.Abort = abort
	t := &tree{opt: opt, pid: opt.Pid, ev: &events{fn: opt.Events, start: time.Now()}}
	res, err := t.run()
	if err != nil {
		if t.aborted() && !errors.Is(err, ErrNoProcess) {
			if cerr := ctx.Err(); cerr != nil {
				return nil, fmt.Errorf("process %d runs on as before, and no image was written (%v): %w (%w)", opt.Pid, err, ErrInterrupted, cerr)
			}
			return nil, fmt.Errorf("process %d runs on as before, and no image was written (%v): %w", opt.Pid, err, ErrInterrupted)
		}
		return nil, err
	}
	if !opt.CheckOnly {
		switch {
		case opt.LeaveStopped:
			t.ev.emit(Stopped)
		case opt.LeaveRunning:
			t.ev.emit(Resumed)
		default:
			t.ev.emit(Killed)
		}
	}
	return res, nil
}

// dumper dumps one process of the tree.
type dumper struct {
	opt     Options
	pid     int
	tr      *ptrace.Tracer
	files   *files.Collector // shared by the whole tree
	threads []*thread        // threads[0] is the main thread (tid == pid)
	proc    image.Process
	scratch uintptr // a page of scratch memory in the task while collecting
	stat    *procfs.Stat
	st      *procfs.Stat   // read again by collectStatic, once frozen
	status  *procfs.Status // likewise

	parentInTree bool // its parent is dumped too (so pages may be shared with it)
	// runs and shared are the pages to copy and the pages shared with the
	// parent, found by scanPages.
	runs, shared []memdump.Run
	// leaderless: its main thread has exited (a zombie leader) while other
	// threads run; only those are seized, and the dump is refused.
	leaderless bool
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

// seizeAll seizes every thread, looping until no new thread appears (a
// thread not yet seized may still create one).
func (d *dumper) seizeAll() error {
	pid := d.pid
	seen := map[int]bool{pid: true}
	if !d.leaderless {
		main, err := d.tr.Seize(pid, unix.PTRACE_O_SUSPEND_SECCOMP)
		if err != nil {
			return d.seizeError(err)
		}
		d.threads = []*thread{{task: main}}
	}
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
			name := ""
			if st, serr := procfs.ReadStat(int(tracer)); serr == nil {
				name = " (" + st.Comm + ")"
			}
			return &causeError{fmt.Sprintf("process %d is already traced by process %d%s; detach it first", pid, tracer, name), ErrPermission}
		}
		if os.Geteuid() == 0 {
			return &causeError{fmt.Sprintf("cannot trace process %d (%v): the kernel refuses it even to root (a kernel thread, pid 1 of a namespace, or Yama's ptrace_scope 3?)", pid, err), ErrPermission}
		}
		return &causeError{fmt.Sprintf("cannot trace process %d (%v); run cr as root or with CAP_SYS_PTRACE and CAP_CHECKPOINT_RESTORE", pid, err), ErrPermission}
	}
	return fmt.Errorf("seize process %d: %w", pid, err)
}

// releaseInjection unmaps the scratch page and puts every thread's registers
// and signal mask back.
func (d *dumper) releaseInjection() error {
	var first error
	if d.scratch != 0 && len(d.threads) > 0 && d.threads[0].in != nil {
		if _, err := d.threads[0].in.Syscall(unix.SYS_MUNMAP, d.scratch, scratchPages*image.PageSize); err != nil {
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

// gone reports whether the target exited (or is exiting) under us.
func (d *dumper) gone() bool {
	if d.leaderless {
		for _, t := range d.threads {
			if t.task.Exited == nil {
				return false
			}
		}
		return true
	}
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

// archGetXcompPerm is ARCH_GET_XCOMP_PERM (arch/x86/include/uapi/asm/prctl.h):
// arch_prctl stores the process's permitted XSAVE features (a u64) at its
// second argument.
const archGetXcompPerm = 0x1022

// splitXState takes a thread's ptrace XSAVE area apart per component, in
// this machine's layout (CPUID leaf 0xd).
func splitXState(area []byte) (*image.XState, error) {
	l, err := cpu.HostLayout()
	if err != nil {
		return nil, fmt.Errorf("xsave layout of this machine: %w", err)
	}
	s, err := l.Split(area)
	if err != nil {
		return nil, fmt.Errorf("xsave area: %w", err)
	}
	return image.XStateFrom(s), nil
}
