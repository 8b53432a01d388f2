package restore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"
	"unsafe"

	"github.com/cr-tools/cr/pkg/image"
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
}

// Result describes a restored process. The process is cr's child: the
// caller waits for it (or lets it go).
type Result struct {
	Pid      int
	Duration time.Duration
}

// Run restores the image in opt.Dir. On success the process runs, detached
// from the tracer, as a child of the calling process.
func Run(opt Options) (*Result, error) {
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
	ck, err := image.Load(dir)
	if err != nil {
		return nil, err
	}
	r := &restorer{opt: opt, ck: ck, proc: ck.Processes[0]}
	if err := r.validate(); err != nil {
		return nil, err
	}
	// Check page checksums while the process is being built; the task is
	// released only if they match.
	verified := make(chan error, 1)
	go func() {
		var err error
		for _, p := range ck.Processes {
			if err = image.VerifyPages(dir, p); err != nil {
				break
			}
		}
		verified <- err
	}()
	r.logf("image loaded and checked in %v", time.Since(start))
	pid, err := r.run(verified)
	if err != nil {
		return nil, err
	}
	return &Result{Pid: pid, Duration: time.Since(start)}, nil
}

type restorer struct {
	opt  Options
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
	tty         string  // cr's terminal, for the tty fds of a shell job
}

// rthread is one thread of the process being built.
type rthread struct {
	task *ptrace.Task
	in   *parasite.Injector
}

func (r *restorer) logf(format string, args ...any) {
	if r.opt.Log != nil {
		fmt.Fprintf(r.opt.Log, format+"\n", args...)
	}
}

// tracer is the one tracer thread of all restores in this process. It is
// never closed: the restored processes are children of its OS thread, and
// when a parent thread exits the kernel sends its children their
// parent-death signal (PR_SET_PDEATHSIG), even if the process lives on.
var tracer = sync.OnceValue(ptrace.NewTracer)

func (r *restorer) run(verified <-chan error) (pid int, err error) {
	r.tr = tracer()

	if err := r.spawn(); err != nil {
		return 0, err
	}
	defer func() {
		if err != nil {
			unix.Kill(r.task.Pid, unix.SIGKILL)
			for i := len(r.threads) - 1; i >= 1; i-- {
				r.threads[i].task.Kill()
			}
			r.task.Kill()
		}
		if r.mem != nil {
			r.mem.Close()
		}
	}()
	t0 := time.Now()
	if err := r.build(); err != nil {
		return 0, fmt.Errorf("restore pid %d: %w", r.proc.Task.Pid, err)
	}
	r.logf("process rebuilt in %v (%d injected syscalls)", time.Since(t0), r.in.Count)
	t0 = time.Now()
	if err := <-verified; err != nil {
		return 0, err
	}
	r.logf("waited %v for the page checksums", time.Since(t0))
	// Every thread is ready: let them all go.
	for i := len(r.threads) - 1; i >= 0; i-- {
		if err := r.threads[i].task.Detach(0); err != nil {
			return 0, err
		}
	}
	return r.task.Pid, nil
}

// spawn starts the stub traced and clones the task with the original pid
// out of it.
func (r *restorer) spawn() error {
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
		Path:   fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), fd),
		Args:   []string{"cr-restore-stub"},
		Env:    []string{},
		Stdin:  null,
		Stdout: null,
		Stderr: null,
	}
	stub, err := r.tr.StartTraced(cmd, r.opt.Timeout, unix.PTRACE_O_TRACECLONE|unix.PTRACE_O_EXITKILL|unix.PTRACE_O_SUSPEND_SECCOMP)
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
	r.logf("created pid %d", want)
	return nil
}

func (r *restorer) checkPidOr(pid int, err error) error {
	if e := r.checkPid(pid); e != nil {
		return e
	}
	return fmt.Errorf("pid %d is in use: %w", pid, err)
}

// sys runs a syscall in the task.
func (r *restorer) sys(nr uintptr, args ...uintptr) (uintptr, error) {
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

func ptr[T any](p *T) uintptr { return uintptr(unsafe.Pointer(p)) }
