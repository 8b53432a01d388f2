package ptrace

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// StopError says a task stopped for a signal the request did not expect
// (say a SIGSEGV from a fault in code run by RunUntilTrap). The task is left
// in that signal-delivery-stop: the next resume discards the signal unless
// the caller passes Sig on.
type StopError struct {
	Pid int
	Sig unix.Signal
}

func (e *StopError) Error() string {
	return fmt.Sprintf("task %d stopped by unexpected signal %d (%v)", e.Pid, int(e.Sig), e.Sig)
}

// RunUntilTrap sets regs, resumes the task with PTRACE_CONT and waits until
// it stops with SIGTRAP (the signal-delivery-stop an int3 causes), then reads
// the registers into out: one trip to the tracer thread. The task is left in
// that stop; the next resume discards the SIGTRAP.
//
// On the way, ptrace event stops (PTRACE_EVENT_STOP from an interrupt or a
// group-stop, PTRACE_EVENT_EXIT, ...) are passed over. A SIGSTOP is passed on
// to the task, so job control still sees it: the group-stop that follows is
// passed over as well, and the kernel puts the task back into it once it is
// detached. Any other signal-delivery-stop ends the wait with a *StopError,
// the task left in that stop and out holding its registers. If the task does
// not stop in time it is interrupted (PTRACE_INTERRUPT, or a thread-directed
// SIGSTOP for a task that was not seized) so that it is left stopped, out
// holds its registers, and the error wraps ErrTimeout. A task that died on
// the way gives an *ExitedError (out is untouched).
func (k *Task) RunUntilTrap(regs *Regs, out *Regs) error {
	return k.t.Do(func() error {
		if err := unix.PtraceSetRegs(k.Pid, regs); err != nil {
			return &Error{"setregs", k.Pid, err}
		}
		sig := 0
		for {
			if err := ptrace(unix.PTRACE_CONT, k.Pid, 0, uintptr(sig)); err != nil {
				return &Error{"cont", k.Pid, err}
			}
			sig = 0
			ws, err := k.wait()
			if errors.Is(err, ErrTimeout) {
				if serr := k.stopRunning(); serr != nil {
					return fmt.Errorf("%w (and the task could not be stopped: %v)", err, serr)
				}
				if gerr := unix.PtraceGetRegs(k.Pid, out); gerr != nil {
					return fmt.Errorf("%w (and getregs failed: %v)", err, gerr)
				}
				return err
			}
			if err != nil {
				return err
			}
			if !ws.Stopped() {
				return &Error{"cont", k.Pid, fmt.Errorf("unexpected status %#x", uint32(ws))}
			}
			if uint32(ws)>>16 != 0 {
				continue // an event stop (x/sys TrapCause misses group-stops, whose signal is not SIGTRAP)
			}
			switch ws.StopSignal() {
			case unix.SIGTRAP:
			case unix.SIGSTOP:
				// Deliver it (for a group-stop of a task that was not seized,
				// which looks the same, the signal is ignored).
				sig = int(unix.SIGSTOP)
				continue
			default:
				if err := unix.PtraceGetRegs(k.Pid, out); err != nil {
					return &Error{"getregs", k.Pid, err}
				}
				return &StopError{Pid: k.Pid, Sig: ws.StopSignal()}
			}
			if err := unix.PtraceGetRegs(k.Pid, out); err != nil {
				return &Error{"getregs", k.Pid, err}
			}
			return nil
		}
	})
}

// stopRunning brings a running task to a stop (any stop) and waits for it.
// It must run on the tracer thread.
func (k *Task) stopRunning() error {
	if err := ptrace(unix.PTRACE_INTERRUPT, k.Pid, 0, 0); err != nil {
		// PTRACE_INTERRUPT only works on seized tasks.
		if _, _, e := unix.RawSyscall(unix.SYS_TKILL, uintptr(k.Pid), uintptr(unix.SIGSTOP), 0); e != 0 {
			return &Error{"tkill", k.Pid, e}
		}
	}
	_, err := k.wait()
	return err
}
