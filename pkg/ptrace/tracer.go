package ptrace

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Error is a failed ptrace (or wait, or process_vm) request.
type Error struct {
	Op  string
	Pid int
	Err error
}

func (e *Error) Error() string { return fmt.Sprintf("ptrace %s pid %d: %v", e.Op, e.Pid, e.Err) }
func (e *Error) Unwrap() error { return e.Err }

// ExitedError says the task is gone (it exited or was killed) while we traced it.
type ExitedError struct {
	Pid    int
	Status unix.WaitStatus
}

func (e *ExitedError) Error() string {
	if e.Status.Signaled() {
		return fmt.Sprintf("process %d was killed by signal %d (%v)", e.Pid, int(e.Status.Signal()), e.Status.Signal())
	}
	return fmt.Sprintf("process %d exited with status %d", e.Pid, e.Status.ExitStatus())
}

// ErrTimeout is returned when a task does not reach the expected stop in time.
var ErrTimeout = errors.New("timed out waiting for the task to stop")

// Tracer owns one locked OS thread on which every ptrace request runs.
type Tracer struct {
	reqs chan func()
	quit chan struct{}
	// Timeout bounds every wait for a stop.
	Timeout time.Duration
}

// NewTracer starts the tracer thread. Close it when done: closing ends the
// thread, and the kernel detaches anything still traced by it.
func NewTracer() *Tracer {
	t := &Tracer{reqs: make(chan func()), quit: make(chan struct{}), Timeout: 10 * time.Second}
	ready := make(chan struct{})
	go func() {
		// Never unlocked: when this goroutine returns the thread exits with it,
		// which detaches every tracee it still holds.
		runtime.LockOSThread()
		close(ready)
		for {
			select {
			case f := <-t.reqs:
				f()
			case <-t.quit:
				return
			}
		}
	}()
	<-ready
	return t
}

// Close stops the tracer thread.
func (t *Tracer) Close() { close(t.quit) }

// Do runs f on the tracer thread and returns its error.
func (t *Tracer) Do(f func() error) error {
	var err error
	done := make(chan struct{})
	t.reqs <- func() {
		defer close(done)
		err = f()
	}
	<-done
	return err
}

func ptrace(req int, pid int, addr, data uintptr) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(pid), addr, data, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// StartTraced forks and execs cmd from the tracer thread with PTRACE_TRACEME,
// so the new process is traced by this tracer and stops at its exec. The
// returned Task is in that stop.
func (t *Tracer) StartTraced(cmd *exec.Cmd, timeout time.Duration, options int) (*Task, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Ptrace = true
	var task *Task
	err := t.Do(func() error {
		if err := cmd.Start(); err != nil {
			return err
		}
		task = &Task{t: t, Pid: cmd.Process.Pid, Timeout: timeout, opts: options, optsKnown: true}
		ws, err := task.wait()
		if err != nil {
			return err
		}
		if !ws.Stopped() || ws.StopSignal() != unix.SIGTRAP {
			return &Error{Op: "exec stop", Pid: task.Pid, Err: fmt.Errorf("unexpected status %#x", uint32(ws))}
		}
		if err := ptrace(unix.PTRACE_SETOPTIONS, task.Pid, 0, uintptr(options)); err != nil {
			return &Error{"setoptions", task.Pid, err}
		}
		return nil
	})
	if err != nil && task != nil {
		unix.Kill(task.Pid, unix.SIGKILL)
		t.Do(func() error { _, err := task.wait(); return err })
	}
	return task, err
}

// Task is one traced thread.
type Task struct {
	t   *Tracer
	Pid int // the thread id
	// Timeout, if set, overrides the tracer's bound on waits for this task.
	Timeout time.Duration
	// GroupStop: the task was stopped (SIGSTOP, job control) when seized.
	GroupStop bool
	// Exited is set once a wait reported the task gone.
	Exited *ExitedError

	opts      int  // the ptrace options last set, when known
	optsKnown bool // opts is known (seized, started or set through this Task)
}

// Options returns the ptrace options set on the task through this package
// (Seize, StartTraced, SetOptions); ok is false when they are not known (a
// task from Adopt).
func (k *Task) Options() (opts int, ok bool) { return k.opts, k.optsKnown }

// Tracer returns the tracer that owns the task.
func (k *Task) Tracer() *Tracer { return k.t }

// Seize attaches to tid with PTRACE_SEIZE and options, and brings it to a
// PTRACE_EVENT_STOP with PTRACE_INTERRUPT. A signal delivered on the way is
// passed on to the task (resumed with it) and we wait again.
func (t *Tracer) Seize(tid int, options int) (*Task, error) {
	k := &Task{t: t, Pid: tid, opts: options, optsKnown: true}
	err := t.Do(func() error {
		if err := ptrace(unix.PTRACE_SEIZE, tid, 0, uintptr(options)); err != nil {
			return &Error{"seize", tid, err}
		}
		if err := ptrace(unix.PTRACE_INTERRUPT, tid, 0, 0); err != nil {
			ptrace(unix.PTRACE_DETACH, tid, 0, 0)
			return &Error{"interrupt", tid, err}
		}
		for {
			ws, err := k.wait()
			if err != nil {
				if k.Exited == nil {
					ptrace(unix.PTRACE_DETACH, tid, 0, 0)
				}
				return err
			}
			// PTRACE_EVENT_STOP: the interrupt stop (stop signal SIGTRAP), or,
			// for a task that was stopped already, a group stop (SIGSTOP and
			// friends; x/sys's TrapCause says -1 for those, so test the
			// status directly).
			if int(ws)>>16 == unix.PTRACE_EVENT_STOP {
				k.GroupStop = ws.StopSignal() != unix.SIGTRAP
				return nil
			}
			// A signal-delivery stop: let the signal through and wait again.
			if err := ptrace(unix.PTRACE_CONT, tid, 0, uintptr(ws.StopSignal())); err != nil {
				ptrace(unix.PTRACE_DETACH, tid, 0, 0)
				return &Error{"cont", tid, err}
			}
		}
	})
	if err != nil {
		return nil, err
	}
	return k, nil
}

// wait waits for the next stop of the task, bounded by the tracer's timeout.
// It must run on the tracer thread.
func (k *Task) wait() (unix.WaitStatus, error) {
	var ws unix.WaitStatus
	timeout := k.t.Timeout
	if k.Timeout != 0 {
		timeout = k.Timeout
	}
	deadline := time.Now().Add(timeout)
	sleep := 20 * time.Microsecond
	spinUntil := time.Now().Add(500 * time.Microsecond)
	for {
		pid, err := unix.Wait4(k.Pid, &ws, unix.WALL|unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return ws, &Error{"wait", k.Pid, err}
		}
		if pid == k.Pid {
			if ws.Exited() || ws.Signaled() {
				k.Exited = &ExitedError{Pid: k.Pid, Status: ws}
				return ws, k.Exited
			}
			return ws, nil
		}
		now := time.Now()
		if now.Before(spinUntil) {
			continue // most stops arrive within microseconds
		}
		if now.After(deadline) {
			return ws, &Error{"wait", k.Pid, ErrTimeout}
		}
		time.Sleep(sleep)
		if sleep < 2*time.Millisecond {
			sleep *= 2
		}
	}
}

// Wait waits for the next stop and returns its status.
func (k *Task) Wait() (ws unix.WaitStatus, err error) {
	err = k.t.Do(func() error { ws, err = k.wait(); return err })
	return
}

func (k *Task) do(op string, req int, addr, data uintptr) error {
	return k.t.Do(func() error {
		if err := ptrace(req, k.Pid, addr, data); err != nil {
			return &Error{op, k.Pid, err}
		}
		return nil
	})
}

// doPtr is do for a request whose data points to memory the kernel reads or
// writes. The pointer is turned into a uintptr only on the tracer thread,
// at the syscall: the closure keeps the object alive and, because it
// escapes, on the heap. (A uintptr made in the caller would point into the
// caller's stack, which may move while the caller waits for the tracer
// thread; the kernel would then write into the stack's old copy.)
func (k *Task) doPtr(op string, req int, addr uintptr, data unsafe.Pointer) error {
	return k.t.Do(func() error {
		_, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(k.Pid), addr, uintptr(data), 0, 0)
		if e != 0 {
			return &Error{op, k.Pid, e}
		}
		return nil
	})
}

// Detach lets the task go, delivering sig (0 for none).
func (k *Task) Detach(sig int) error {
	return k.do("detach", unix.PTRACE_DETACH, 0, uintptr(sig))
}

// Cont resumes the task with sig (0 for none).
func (k *Task) Cont(sig int) error { return k.do("cont", unix.PTRACE_CONT, 0, uintptr(sig)) }

// Interrupt asks a seized task to stop.
func (k *Task) Interrupt() error { return k.do("interrupt", unix.PTRACE_INTERRUPT, 0, 0) }

// SetOptions sets the ptrace options.
func (k *Task) SetOptions(options int) error {
	err := k.do("setoptions", unix.PTRACE_SETOPTIONS, 0, uintptr(options))
	if err == nil {
		k.opts, k.optsKnown = options, true
	}
	return err
}

// EventMsg returns PTRACE_GETEVENTMSG (e.g. the new tid after a clone event).
func (k *Task) EventMsg() (uint, error) {
	var msg uint
	err := k.t.Do(func() error {
		var err error
		msg, err = unix.PtraceGetEventMsg(k.Pid)
		if err != nil {
			return &Error{"geteventmsg", k.Pid, err}
		}
		return nil
	})
	return msg, err
}

// Adopt returns a Task for a thread this tracer already traces (e.g. one
// auto-attached by PTRACE_O_TRACECLONE).
func (t *Tracer) Adopt(tid int) *Task { return &Task{t: t, Pid: tid} }

// Inject sets regs, single-steps the task over the instruction at regs.Rip
// and returns the registers after the step, in one trip to the tracer
// thread. Event and group stops on the way are passed over.
func (k *Task) Inject(regs *Regs, out *Regs) (err error) {
	return k.t.Do(func() error {
		if err := unix.PtraceSetRegs(k.Pid, regs); err != nil {
			return &Error{"setregs", k.Pid, err}
		}
		for {
			if err := ptrace(unix.PTRACE_SINGLESTEP, k.Pid, 0, 0); err != nil {
				return &Error{"singlestep", k.Pid, err}
			}
			ws, err := k.wait()
			if err != nil {
				return err
			}
			if ws.Stopped() && ws.StopSignal() == unix.SIGTRAP && ws.TrapCause() <= 0 {
				break
			}
			if ws.Stopped() && ws.TrapCause() > 0 {
				// A ptrace event (an interrupt, or PTRACE_EVENT_CLONE from an
				// injected clone): the step has not finished; go on.
				continue
			}
			return &Error{"singlestep", k.Pid, fmt.Errorf("unexpected stop %#x", uint32(ws))}
		}
		if err := unix.PtraceGetRegs(k.Pid, out); err != nil {
			return &Error{"getregs", k.Pid, err}
		}
		return nil
	})
}

// ResumeAndWait resumes the task with req (PTRACE_CONT, PTRACE_SYSCALL,
// PTRACE_SINGLESTEP) and waits for the next stop, all in one trip to the
// tracer thread.
func (k *Task) ResumeAndWait(req int, sig int) (ws unix.WaitStatus, err error) {
	err = k.t.Do(func() error {
		if err := ptrace(req, k.Pid, 0, uintptr(sig)); err != nil {
			return &Error{"resume", k.Pid, err}
		}
		ws, err = k.wait()
		return err
	})
	return
}

// Kill sends SIGKILL to the task and reaps it if it is our child or tracee.
func (k *Task) Kill() {
	unix.Kill(k.Pid, unix.SIGKILL)
	k.t.Do(func() error {
		for k.Exited == nil {
			if _, err := k.wait(); err != nil {
				return err
			}
		}
		return nil
	})
}

// ProcMem opens /proc/PID/mem, which writes through page protections.
func ProcMem(pid int) (*os.File, error) {
	return os.OpenFile(fmt.Sprintf("/proc/%d/mem", pid), os.O_RDWR, 0)
}
