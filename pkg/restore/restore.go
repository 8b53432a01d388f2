package restore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/cr-tools/cr/pkg/procfs"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/cr-tools/cr/pkg/files"
	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/ipc"
	"github.com/cr-tools/cr/pkg/parasite"
	"github.com/cr-tools/cr/pkg/ptrace"
	"golang.org/x/sys/unix"
)

// Options configure a restore.
type Options struct {
	Dir         string
	ForceKernel bool          // restore an image dumped on another kernel release
	Timeout     time.Duration // bound for every wait on the task (default 10 s)
	PidWait     time.Duration // how long to wait for a zombie holding the pid (default 5 s)
	Log         io.Writer     // progress messages (-v); nil for none
	// ShellJob lets a process that had a terminal, or whose session or
	// process group lies outside the image, join cr's session, process
	// group and terminal (CRIU's --shell-job).
	ShellJob bool
	// Fill selects how pages reach the task: "preadv" (default: the task
	// reads its own pages from the image) or "writev" (cr pushes them with
	// process_vm_writev). Both exist so that they can be compared.
	Fill string
	// InheritFds plugs descriptors of the caller into the restored
	// processes in place of external files (pipe or socketpair ends whose
	// other end was outside the dumped tree; `cr show` lists their IDs):
	// external ID ("pipe:[INO]", "socket:[INO]") -> an fd of the calling
	// process, as CRIU's --inherit-fd fd[N]:ID. The restored processes get
	// their own descriptors of the same open file descriptions; the
	// caller's fds are left open. An external file not in the map that a
	// process held at fd 0, 1 or 2 takes the caller's fd of that number; any
	// other is refused before anything is created.
	InheritFds map[string]int
	// TCPClose restores established TCP connections closed, for a restore
	// where the peers are gone (--tcp-close, CRIU's name): see
	// files.closedTCP. Listeners are restored as ever.
	TCPClose bool
	// LeaveStopped leaves every restored process stopped (as by SIGSTOP)
	// instead of letting it run (CRIU's --leave-stopped); a SIGCONT
	// resumes it.
	LeaveStopped bool
	// Notify, if set, is called at CRIU's action-script points (Action*):
	// ActionPreRestore before the image is read, ActionPostRestore once
	// every process is rebuilt, before any runs. An error aborts the
	// restore, leaving nothing running. pid is the image's root pid.
	Notify func(action string, pid int) error
	// FileLocks takes again the file locks the image holds (--file-locks,
	// as at the dump); an image with locks is refused without it.
	FileLocks bool
	// Events, if set, is called at every step of the restore (Event,
	// Phase), one call at a time and in order, from Run's goroutine: it
	// must return quickly and not call back into the restore. cmd/cr
	// draws its progress line and --display-stats from it.
	Events func(Event)
}

// Result describes a restored process. The process is cr's child: the
// caller waits for it (or lets it go).
type Result struct {
	Pid      int
	Duration time.Duration
	// Foreground is, for a shell job (Options.ShellJob) whose terminal's
	// foreground process group at the dump is a group of the image, that
	// group (restored in the caller's session); 0 otherwise. A caller in
	// the foreground of its terminal gives it the terminal (TIOCSPGRP), as
	// cr restore does.
	Foreground int
	// Processes lists every process restored with its threads, in image
	// order (the root first, parents before children).
	Processes []RestoredProcess
	// Figures for --display-stats and stats-restore.json
	// (image.RestoreStats).
	LoadTime      time.Duration // reading and checking the image
	BuildTime     time.Duration // rebuilding the processes
	VerifyWait    time.Duration // waiting for the page checksums afterwards
	PagesRestored uint64        // pages read from the image's pages files
	Bytes         int64         // size of the image's files
}

// Run restores the image in opt.Dir. On success the processes run,
// detached from the tracer; the root process is a child of the caller,
// which must wait for it (wait4, os.Process.Wait of os.FindProcess) or
// leave a zombie when it exits.
//
// Cancelling ctx aborts the restore at its next phase boundary or during
// the page filling: whatever was created is killed and reaped (its pids
// are free again), and the error wraps ctx.Err(). Once the processes are
// let go (the Running event) the restore completes.
func Run(ctx context.Context, opt Options) (*Result, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	if opt.Timeout == 0 {
		opt.Timeout = 10 * time.Second
	}
	if opt.PidWait == 0 {
		opt.PidWait = 5 * time.Second
	}
	dir, err := filepath.Abs(opt.Dir)
	if err != nil {
		return nil, err
	}
	opt.Dir = dir
	start := time.Now()
	ev := &events{fn: opt.Events, start: start}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("restore cancelled: %w", err)
	}
	if err := notify(opt, ActionPreRestore, dir); err != nil {
		return nil, err
	}
	ck, err := files.Load(dir)
	if err != nil {
		return nil, err
	}
	t := &treeRestore{opt: opt, ck: ck, byPid: map[int]*restorer{}, shmem: map[uint64]int{}, ctx: ctx, ev: ev}
	t.open = files.NewOpener(t, ck)
	t.open.TCPClose = opt.TCPClose
	defer t.closeFiles()
	if err := t.validate(); err != nil {
		return nil, err
	}
	// Check page checksums while the processes are being built; they are
	// released only if they match.
	verified := make(chan error, 1)
	go func() {
		var err error
		for _, p := range ck.Processes {
			if p.Task.Zombie {
				continue
			}
			if err = image.VerifyPages(dir, p); err != nil {
				break
			}
		}
		if err == nil {
			err = image.VerifyShmem(dir, ck.Shmem)
		}
		if err == nil {
			err = image.VerifySysVShm(dir, ck.IPC)
		}
		verified <- err
	}()
	t.logf("image loaded and checked in %v", time.Since(start))
	loadTime := time.Since(start)
	t.countPages()
	ev.emit(Validated)
	pid, err := t.run(verified)
	if err != nil {
		return nil, err
	}
	res := &Result{Pid: pid, Duration: time.Since(start), LoadTime: loadTime, BuildTime: t.buildTime, VerifyWait: t.verifyWait, Foreground: t.foreground(),
		Processes: t.restored()}
	t.writeStats(res)
	return res, nil
}

// treeRestore rebuilds every process of the image.
type treeRestore struct {
	opt   Options
	ck    *image.Checkpoint
	tr    *ptrace.Tracer
	procs []*restorer // in image order: parents before children
	byPid map[int]*restorer
	tty   string // cr's terminal, for the tty fds of a shell job
	creds *creds // cr's credentials, read once by validate

	// checkOnly: validate runs for Check, on a dump's image while the dumped
	// processes still live; the checks that need them gone are skipped.
	checkOnly bool

	crEnd int            // cr's end of the fd transport (SCM_RIGHTS)
	open  *files.Opener  // cr's own fds of the open file descriptions
	shmem map[uint64]int // shared memory object id -> cr's fd of it

	ipcReplace []ipc.Object // objects of the namespace the image's replace (validate)
	ipc        *ipc.Created // the SysV IPC objects made

	buildTime, verifyWait time.Duration // for Result

	ctx context.Context // Run's: cancellation (cancelled, filled)
	ev  *events         // Options.Events (events.go)
}

// made reports whether cr has (made or copied) file id.
func (t *treeRestore) made(id int) bool {
	_, ok := t.open.Have(id)
	return ok
}

// Logf reports progress (-v; files.Env).
func (t *treeRestore) Logf(format string, args ...any) { t.logf(format, args...) }

// Terminal names cr's terminal for the tty fds of a shell job, found once
// (files.Env); "" while only checking an image.
func (t *treeRestore) Terminal() (string, error) {
	if t.tty == "" && !t.checkOnly {
		tty, err := ownTerminal()
		if err != nil {
			return "", err
		}
		t.tty = tty
	}
	return t.tty, nil
}

type restorer struct {
	opt  Options
	t    *treeRestore
	ck   *image.Checkpoint
	proc *image.Process

	tr      *ptrace.Tracer
	task    *ptrace.Task // the main thread of the process being built
	in      *parasite.Injector
	threads []*rthread // every thread, threads[0] the main one
	mem     *os.File   // /proc/PID/mem of the task

	scratch     uintptr // scratch area in the task
	scratchSize uintptr
	tramp       uintptr // trampoline (code page + scratch)
	transport   int     // the task's end of the fd transport

	pending []queued // injected syscalls waiting to run as one batch
	arena   uintptr  // bytes of the scratch arena used by pending calls
}

// rthread is one thread of the process being built.
type rthread struct {
	task *ptrace.Task
	in   *parasite.Injector
}

func (r *restorer) logf(format string, args ...any) { r.t.logf(format, args...) }

func (t *treeRestore) logf(format string, args ...any) {
	if t.opt.Log != nil {
		fmt.Fprintf(t.opt.Log, format+"\n", args...)
	}
}

// tracer is the one tracer thread of all restores in this process. It is
// never closed: the restored processes are children of its OS thread, and
// when a parent thread exits the kernel sends its children their
// parent-death signal (PR_SET_PDEATHSIG), even if the process lives on.
var tracer = sync.OnceValue(ptrace.NewTracer)

func (t *treeRestore) newRestorer(p *image.Process) *restorer {
	r := &restorer{opt: t.opt, t: t, ck: t.ck, proc: p, tr: t.tr, transport: 3}
	t.procs = append(t.procs, r)
	t.byPid[p.Task.Pid] = r
	return r
}

func (t *treeRestore) run(verified <-chan error) (pid int, err error) {
	t.tr = tracer()
	// SysV IPC objects first: the processes attach the segments.
	if t.ipc, err = ipc.Create(t.opt.Dir, t.ck.IPC, t.ipcReplace); err != nil {
		return 0, err
	}
	defer func() {
		if err != nil {
			t.ipc.Undo() // after the processes are killed (deferred first)
		}
	}()
	var crEnd, taskEnd int
	{
		sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return 0, fmt.Errorf("fd transport: %w", err)
		}
		crEnd, taskEnd = sp[0], sp[1]
		t.crEnd = crEnd
		defer unix.Close(crEnd)
	}
	if err := t.cancelled(); err != nil {
		unix.Close(taskEnd)
		return 0, err
	}
	root := t.newRestorer(t.ck.Processes[0])
	defer func() {
		if err != nil {
			t.killAll()
		}
		for _, r := range t.procs {
			if r.mem != nil {
				r.mem.Close()
			}
		}
	}()
	transport := os.NewFile(uintptr(taskEnd), "cr-fd-transport")
	err = root.spawn(transport)
	transport.Close()
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	if err := root.prepare(); err != nil {
		return 0, fmt.Errorf("restore pid %d: %w", root.proc.Task.Pid, err)
	}
	t.ev.emit(Created)
	// Build the memory of every process, forking each child from its parent
	// once the parent's memory is in place, so that the pages they shared
	// at the dump are shared (copy-on-write) again.
	if err := t.growTree(root); err != nil {
		return 0, err
	}
	if err := t.cancelled(); err != nil {
		return 0, err
	}
	if err := t.setGroups(); err != nil {
		return 0, err
	}
	if err := t.setForeground(); err != nil {
		return 0, err
	}
	for _, r := range t.procs {
		if r.proc.Task.Zombie {
			continue
		}
		if err := t.cancelled(); err != nil {
			return 0, err
		}
		if err := r.build(); err != nil {
			return 0, fmt.Errorf("restore pid %d: %w", r.proc.Task.Pid, err)
		}
	}
	if err := t.sealShmem(); err != nil {
		return 0, err
	}
	if err := t.ipc.Finish(); err != nil {
		return 0, err
	}
	// What the kinds do once every process is built (sockets are shut
	// down once every queued message is in).
	if err := t.open.Finish(); err != nil {
		return 0, err
	}
	// Zombies exit last: their parents are complete, their SIGCHLD is drained.
	for _, r := range t.procs {
		if r.proc.Task.Zombie {
			if err := r.becomeZombie(); err != nil {
				return 0, fmt.Errorf("restore zombie %d: %w", r.proc.Task.Pid, err)
			}
		}
	}
	for _, r := range t.procs {
		if r.proc.Task.Zombie {
			continue
		}
		// File locks last, when no close of the rebuild can drop them.
		if err := files.TakeLocks(taskFiles{r}, t.ck); err != nil {
			return 0, fmt.Errorf("restore pid %d: %w", r.proc.Task.Pid, err)
		}
		if err := r.finish(); err != nil {
			return 0, fmt.Errorf("restore pid %d: %w", r.proc.Task.Pid, err)
		}
	}
	t.buildTime = time.Since(t0)
	t.logf("%d processes rebuilt in %v", len(t.procs), time.Since(t0))
	t0 = time.Now()
	if err := <-verified; err != nil {
		return 0, err
	}
	t.verifyWait = time.Since(t0)
	t.logf("waited %v for the page checksums", time.Since(t0))
	if err := t.cancelled(); err != nil {
		return 0, err
	}
	if err := t.notify(ActionPostRestore); err != nil {
		return 0, err
	}
	// Every socket is in place and every process built: the network lock
	// of the image goes now, just before they run (a restore that fails
	// before keeps it, and can be tried again).
	if err := t.open.NetworkUnlock(); err != nil {
		return 0, err
	}
	if t.ck.Inventory.NetLock != "" {
		if err := t.notify(ActionNetworkUnlock); err != nil {
			return 0, err
		}
	}
	// Every thread of every process is ready: let them all go. From here
	// on the restore completes (a cancellation is not looked at).
	if err := t.cancelled(); err != nil {
		return 0, err
	}
	for _, r := range t.procs {
		if r.proc.Task.Zombie {
			continue
		}
		for i := len(r.threads) - 1; i >= 0; i-- {
			sig := 0
			if i == 0 && (r.proc.Task.Stopped || t.opt.LeaveStopped) {
				sig = int(unix.SIGSTOP) // it was stopped: it stops again at once
			}
			if err := r.threads[i].task.Detach(sig); err != nil {
				return 0, err
			}
		}
	}
	t.ev.emit(Running)
	return root.task.Pid, nil
}

// growTree builds r's memory, then forks r's children (depth first).
func (t *treeRestore) growTree(r *restorer) error {
	if err := t.cancelled(); err != nil {
		return err
	}
	if !r.proc.Task.Zombie {
		if err := r.buildMemory(); err != nil {
			return fmt.Errorf("restore pid %d: %w", r.proc.Task.Pid, err)
		}
	}
	for _, p := range t.ck.Processes[1:] {
		if p.Task.Ppid != r.proc.Task.Pid {
			continue
		}
		if err := r.fork(p); err != nil {
			return fmt.Errorf("restore pid %d: %w", p.Task.Pid, err)
		}
		if err := t.growTree(t.byPid[p.Task.Pid]); err != nil {
			return err
		}
	}
	return nil
}

// killAll kills whatever was created; used when a restore fails.
func (t *treeRestore) killAll() {
	for _, r := range t.procs {
		if r.task != nil {
			unix.Kill(r.task.Pid, unix.SIGKILL)
		}
	}
	for i := len(t.procs) - 1; i >= 0; i-- {
		r := t.procs[i]
		for j := len(r.threads) - 1; j >= 1; j-- {
			r.threads[j].task.Kill()
		}
		if r.task != nil && r.task.Exited == nil {
			r.task.Kill()
		}
	}
}

// closeFiles closes cr's own copies of the restored open files.
func (t *treeRestore) closeFiles() {
	if t.open != nil {
		t.open.Close()
	}
	for _, fd := range t.shmem {
		unix.Close(fd)
	}
}

// spawn starts the stub traced and clones the task with the original pid
// out of it. taskEnd becomes the stub's fd 3, inherited by every process
// forked from it.
func (r *restorer) spawn(transport *os.File) error {
	want := r.proc.Task.Pid
	fd, err := unix.MemfdCreate("cr-restore-stub", unix.MFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("memfd for the restorer stub: %w", err)
	}
	memfd := os.NewFile(uintptr(fd), "cr-restore-stub")
	defer memfd.Close()
	if _, err := memfd.Write(stubELF()); err != nil {
		return err
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer null.Close()
	cmd := &exec.Cmd{
		Path:       fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), fd),
		Args:       []string{"cr-restore-stub"},
		Env:        []string{},
		Stdin:      null,
		Stdout:     null,
		Stderr:     null,
		ExtraFiles: []*os.File{transport},
	}
	stub, err := r.tr.StartTraced(cmd, r.opt.Timeout, unix.PTRACE_O_TRACECLONE|unix.PTRACE_O_TRACEFORK|unix.PTRACE_O_EXITKILL|unix.PTRACE_O_SUSPEND_SECCOMP)
	if err != nil {
		return fmt.Errorf("start restorer stub: %w", err)
	}
	defer stub.Kill()
	in, err := parasite.New(stub, stubSyscall)
	if err != nil {
		return err
	}
	// struct clone_args (CLONE_ARGS_SIZE_VER1 = 80 bytes), then set_tid[1].
	args := make([]byte, 88)
	le := binary.LittleEndian
	le.PutUint64(args[0:], unix.CLONE_PARENT)
	le.PutUint64(args[64:], stubScratch+80) // set_tid
	le.PutUint64(args[72:], 1)              // set_tid_size
	le.PutUint64(args[80:], uint64(want))
	if err := ptrace.Write(stub.Pid, stubScratch, args); err != nil {
		return err
	}
	got, err := in.Syscall(unix.SYS_CLONE3, stubScratch, 80)
	if err != nil {
		if errors.Is(err, unix.EEXIST) {
			return r.checkPidOr(want, err)
		}
		return fmt.Errorf("create process with pid %d (clone3 set_tid): %w", want, err)
	}
	if int(got) != want {
		unix.Kill(int(got), unix.SIGKILL)
		return fmt.Errorf("clone3 gave pid %d, wanted %d", got, want)
	}
	r.task = r.tr.Adopt(want)
	r.task.Timeout = r.opt.Timeout
	// The new task starts with a SIGSTOP (auto-attached by TRACECLONE).
	if _, err := r.task.Wait(); err != nil {
		return fmt.Errorf("wait for the new process %d: %w", want, err)
	}
	if r.in, err = parasite.New(r.task, stubSyscall); err != nil {
		return err
	}
	r.threads = []*rthread{{task: r.task, in: r.in}}
	if r.mem, err = ptrace.ProcMem(want); err != nil {
		return err
	}
	r.logf("created pid %d", want)
	return nil
}

// fork creates the child process p of r (clone3 with set_tid), which starts
// as a copy of r's current, still empty, address space: the trampoline, the
// scratch area and the vdso are where they are in r.
func (r *restorer) fork(p *image.Process) error {
	want := p.Task.Pid
	args := le64(0, 0, 0, 0, uint64(unix.SIGCHLD), 0, 0, 0, uint64(r.scratch+80), 1, uint64(want))
	addr, err := r.put(0, args)
	if err != nil {
		return err
	}
	c := r.t.newRestorer(p)
	got, err := r.sys(unix.SYS_CLONE3, addr, 80)
	if err != nil {
		if errors.Is(err, unix.EEXIST) {
			return r.checkPidOr(want, err)
		}
		return fmt.Errorf("fork pid %d (clone3 set_tid): %w", want, err)
	}
	if int(got) != want {
		return fmt.Errorf("clone3 gave pid %d, wanted %d", got, want)
	}
	c.task = r.tr.Adopt(want)
	c.task.Timeout = r.opt.Timeout
	if _, err := c.task.Wait(); err != nil {
		return fmt.Errorf("wait for the new process %d: %w", want, err)
	}
	c.tramp, c.scratch, c.scratchSize = r.tramp, r.scratch, r.scratchSize
	if c.in, err = parasite.New(c.task, r.tramp); err != nil {
		return err
	}
	c.threads = []*rthread{{task: c.task, in: c.in}}
	if c.mem, err = ptrace.ProcMem(want); err != nil {
		return err
	}
	if p.Task.Sid == want && !p.Task.Zombie {
		if _, err := c.sys(unix.SYS_SETSID); err != nil {
			return fmt.Errorf("setsid: %w", err)
		}
	}
	if err := c.takeCtty(); err != nil {
		return err
	}
	r.logf("forked pid %d from %d", want, r.proc.Task.Pid)
	return nil
}

// setGroups puts every process into its process group: group leaders
// first, then the members.
func (t *treeRestore) setGroups() error {
	root := &t.ck.Processes[0].Task
	for pass := 0; pass < 2; pass++ {
		for _, r := range t.procs {
			tk := &r.proc.Task
			leader := tk.Pgid == tk.Pid
			if tk.Sid == tk.Pid && !t.opt.ShellJob || (pass == 0) != leader {
				continue // a session leader leads its group already
			}
			if _, ok := t.byPid[tk.Pgid]; !ok || t.opt.ShellJob && tk.Pgid == root.Pgid && root.Pgid != root.Pid {
				// A shell job's group led by a process outside the image
				// (a pipeline's first command): it is cr's group now. A job
				// whose root led its group (a program started from an
				// interactive shell, which made it a group of its own and
				// keeps its pgid) leads it again, in cr's session; cr
				// restore gives it the terminal (cmd/cr, waitJob).
				continue
			}
			if _, err := r.sys(unix.SYS_SETPGID, 0, uintptr(tk.Pgid)); err != nil {
				return fmt.Errorf("pid %d: join process group %d: %w", tk.Pid, tk.Pgid, err)
			}
		}
	}
	return nil
}

// becomeZombie makes the process exit with its saved status; its parent
// has not reaped it, so it stays a zombie. The SIGCHLD this sends the parent
// is taken out of the parent's queue again (it had been delivered before
// the dump, or is in the parent's saved pending signals).
func (r *restorer) becomeZombie() error {
	ws := unix.WaitStatus(r.proc.Task.ExitStatus)
	if ws.Signaled() {
		switch ws.Signal() {
		case unix.SIGCHLD, unix.SIGCONT, unix.SIGURG, unix.SIGWINCH, unix.SIGSTOP, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU:
			return fmt.Errorf("image is inconsistent: a process killed by %v, which does not kill", ws.Signal())
		}
	}
	if name, err := r.putString(0, r.proc.Task.Comm); err == nil {
		r.sys(unix.SYS_PRCTL, unix.PR_SET_NAME, name) // ps shows the zombie by its name
	}
	regs := ptrace.Regs{}
	if cur, err := r.task.GetRegs(); err == nil {
		regs = *cur
	}
	regs.Rip = uint64(r.tramp)
	regs.Orig_rax = ^uint64(0)
	if ws.Signaled() {
		sig := uintptr(ws.Signal())
		addr, err := r.put(0, le64(0, 0, 0, 0))
		if err != nil {
			return err
		}
		if _, err := r.sys(unix.SYS_RT_SIGACTION, sig, addr, 0, 8); err != nil {
			return err
		}
		regs.Rax, regs.Rdi, regs.Rsi = unix.SYS_KILL, uint64(r.proc.Task.Pid), uint64(sig)
		if err := r.task.SetSigmask(0); err != nil {
			return err
		}
	} else {
		regs.Rax, regs.Rdi = unix.SYS_EXIT_GROUP, uint64(ws.ExitStatus())
	}
	if err := r.task.SetRegs(&regs); err != nil {
		return err
	}
	if err := r.task.Detach(0); err != nil {
		return err
	}
	// Wait until it is a zombie, then drain the parent's SIGCHLD.
	for deadline := time.Now().Add(r.opt.Timeout); ; time.Sleep(time.Millisecond) {
		st, err := procfs.ReadStat(r.proc.Task.Pid)
		if err == nil && st.State == 'Z' {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("process did not exit")
		}
	}
	parent := r.t.byPid[r.proc.Task.Ppid]
	set, err := parent.put(0, le64(1<<(unix.SIGCHLD-1), 0, 0))
	if err != nil {
		return err
	}
	if _, err := parent.sys(unix.SYS_RT_SIGTIMEDWAIT, set, 0, set+8, 8); err != nil && !errors.Is(err, unix.EAGAIN) {
		return fmt.Errorf("drain SIGCHLD of the parent: %w", err)
	}
	r.task.Exited = &ptrace.ExitedError{Pid: r.task.Pid}
	return nil
}

func (r *restorer) checkPidOr(pid int, err error) error {
	if e := r.t.checkPid(pid); e != nil {
		return e
	}
	return fmt.Errorf("pid %d is in use: %w", pid, err)
}

// sys runs a syscall in the task.
// Pending queued calls run first, so that the order is kept.
func (r *restorer) sys(nr uintptr, args ...uintptr) (uintptr, error) {
	if len(r.pending) > 0 {
		if err := r.flush(); err != nil {
			return 0, err
		}
	}
	return r.in.Syscall(nr, args...)
}

// put copies b into the task's scratch area at off and returns its address.
func (r *restorer) put(off uintptr, b []byte) (uintptr, error) {
	if off+uintptr(len(b)) > r.scratchSize {
		return 0, fmt.Errorf("scratch area too small for %d bytes", len(b))
	}
	if _, err := r.mem.WriteAt(b, int64(r.scratch+off)); err != nil {
		return 0, fmt.Errorf("write scratch memory: %w", err)
	}
	return r.scratch + off, nil
}

// putString copies a NUL-terminated string into the scratch area.
func (r *restorer) putString(off uintptr, s string) (uintptr, error) {
	return r.put(off, append([]byte(s), 0))
}

// foreground is Result.Foreground: the root's terminal's foreground group
// at the dump, if a shell job's and a group the image restored.
func (t *treeRestore) foreground() int {
	root := &t.ck.Processes[0].Task
	if !t.opt.ShellJob || !root.Tty || root.Tpgid <= 0 {
		return 0
	}
	for _, p := range t.ck.Processes {
		if !p.Task.Zombie && p.Task.Pgid == root.Tpgid && (root.Tpgid != root.Pgid || root.Pgid == root.Pid) {
			return root.Tpgid
		}
	}
	return 0
}
