package ptrace

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The requests below serve fail-safe injection (see pkg/parasite): they
// never leave a task in a signal-delivery-stop, because a tracer that dies
// while its tracee sits in one makes the kernel deliver the stop's signal
// (SIGTRAP) to the detached task. Syscall stops (with PTRACE_O_TRACESYSGOOD)
// and PTRACE_EVENT_STOPs are harmless: a detached task resumes from them with
// whatever registers it holds.

// sysGoodTrap is the stop signal of a syscall stop with PTRACE_O_TRACESYSGOOD.
const sysGoodTrap = unix.SIGTRAP | 0x80

func setSigmaskRaw(pid int, m uint64) error {
	p := new(uint64)
	*p = m
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SETSIGMASK, uintptr(pid), 8, uintptr(unsafe.Pointer(p)), 0, 0)
	if e != 0 {
		return &Error{"setsigmask", pid, e}
	}
	return nil
}

// putBack restores the rest state of a task: the signal mask first, then the
// registers (in that order: a task left with its own registers but our mask
// would run on with every signal blocked).
func (k *Task) putBack(restMask uint64, rest *Regs) error {
	if rest == nil {
		return nil
	}
	if err := setSigmaskRaw(k.Pid, restMask); err != nil {
		return err
	}
	killPoint("putback-mask")
	if err := unix.PtraceSetRegs(k.Pid, rest); err != nil {
		return &Error{"setregs", k.Pid, err}
	}
	return nil
}

// InjectSyscallStops runs one syscall in the task: it sets regs (rip at a
// `syscall` instruction), then the signal mask mask, resumes the task with
// PTRACE_SYSCALL to its syscall-enter-stop and again to the syscall-exit-stop,
// reads the registers into out and, if rest is not nil, puts back the signal
// mask restMask and the registers rest: one trip to the tracer thread. The
// task must have PTRACE_O_TRACESYSGOOD set. Event stops on the way are passed
// over; a SIGSTOP is passed on to the task; any other signal-delivery-stop is
// a *StopError (out then holds the registers and nothing is put back).
func (k *Task) InjectSyscallStops(regs *Regs, mask uint64, out *Regs, restMask uint64, rest *Regs) error {
	return k.t.Do(func() error {
		if err := unix.PtraceSetRegs(k.Pid, regs); err != nil {
			return &Error{"setregs", k.Pid, err}
		}
		killPoint("syscall-regs")
		if err := setSigmaskRaw(k.Pid, mask); err != nil {
			return err
		}
		stops, sig := 0, 0
		for stops < 2 {
			killPoint("syscall-stop")
			if err := ptrace(unix.PTRACE_SYSCALL, k.Pid, 0, uintptr(sig)); err != nil {
				return &Error{"syscall", k.Pid, err}
			}
			sig = 0
			ws, err := k.wait()
			if err != nil {
				return err
			}
			if !ws.Stopped() {
				return &Error{"syscall", k.Pid, fmt.Errorf("unexpected status %#x", uint32(ws))}
			}
			switch {
			case ws.StopSignal() == sysGoodTrap:
				stops++
			case uint32(ws)>>16 != 0:
				// an event stop (interrupt, group-stop, clone): go on
			case ws.StopSignal() == unix.SIGSTOP:
				sig = int(unix.SIGSTOP)
			default:
				if err := unix.PtraceGetRegs(k.Pid, out); err != nil {
					return &Error{"getregs", k.Pid, err}
				}
				return &StopError{Pid: k.Pid, Sig: ws.StopSignal()}
			}
		}
		if err := unix.PtraceGetRegs(k.Pid, out); err != nil {
			return &Error{"getregs", k.Pid, err}
		}
		return k.putBack(restMask, rest)
	})
}

// ErrEscaped says a task left injected code on its own (it returned to its
// own context through rt_sigreturn because the tracer did not stop it in
// time) and is now somewhere in its own code.
var ErrEscaped = errors.New("the task left the injected code before the tracer stopped it")

// RunUntilParked runs injected code that signals its end by storing 1 in the
// u64 at flag and then parks (sleeps in a syscall) somewhere in
// [parkLo, parkHi]: it sets regs, then the signal mask mask, resumes the task
// with PTRACE_CONT, waits until flag reads 1, stops the task with
// PTRACE_INTERRUPT (a PTRACE_EVENT_STOP, harmless if the tracer dies), reads
// the registers into out and, if rest is not nil, puts back restMask and rest
// (by way of parkHi, see below): one trip to the tracer thread.
//
// Stops on the way are handled as by RunUntilTrap (event stops passed over,
// SIGSTOP passed on, any other signal a *StopError with the task left in that
// stop and out holding its registers; ErrTimeout; *ExitedError). If the task
// stops outside [parkLo, parkHi] once interrupted, it got away (ErrEscaped,
// out holds its registers, nothing is put back).
//
// parkHi must be the address of the code that takes the task back to its own
// context (rt_sigreturn through the frame at regs' rsp-8): the task is put
// there, with orig_rax -1, before the signal mask changes either way. A
// tracer that dies between two of these requests then leaves a task that
// returns into its own context at once; with the code's registers and its
// own mask it would run the injected code with signals unblocked, and a
// signal handled there would find rsp on the frame (SIGSEGV if that is
// in the read-only code page).
func (k *Task) RunUntilParked(regs *Regs, mask uint64, flag uintptr, parkLo, parkHi uint64, out *Regs, restMask uint64, rest *Regs) error {
	return k.t.Do(func() error {
		back := *regs
		back.Rip, back.Orig_rax = parkHi, ^uint64(0)
		if err := unix.PtraceSetRegs(k.Pid, &back); err != nil {
			return &Error{"setregs", k.Pid, err}
		}
		killPoint("batch-regs")
		if err := setSigmaskRaw(k.Pid, mask); err != nil {
			return err
		}
		killPoint("batch-mask")
		if err := unix.PtraceSetRegs(k.Pid, regs); err != nil {
			return &Error{"setregs", k.Pid, err}
		}
		timeout := k.t.Timeout
		if k.Timeout != 0 {
			timeout = k.Timeout
		}
		deadline := time.Now().Add(timeout)
		var fbuf [8]byte
		local := []unix.Iovec{{Base: &fbuf[0]}}
		local[0].SetLen(8)
		remote := []unix.RemoteIovec{{Base: flag, Len: 8}}
		interrupted := false
		sig := 0
		if err := ptrace(unix.PTRACE_CONT, k.Pid, 0, 0); err != nil {
			return &Error{"cont", k.Pid, err}
		}
		killPoint("batch-cont")
		for n := 0; ; n++ {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(k.Pid, &ws, unix.WALL|unix.WNOHANG, nil)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return &Error{"wait", k.Pid, err}
			}
			if pid == k.Pid {
				if ws.Exited() || ws.Signaled() {
					k.Exited = &ExitedError{Pid: k.Pid, Status: ws}
					return k.Exited
				}
				if !ws.Stopped() {
					return &Error{"cont", k.Pid, fmt.Errorf("unexpected status %#x", uint32(ws))}
				}
				if uint32(ws)>>16 != 0 && interrupted {
					if err := unix.PtraceGetRegs(k.Pid, out); err != nil {
						return &Error{"getregs", k.Pid, err}
					}
					if out.Rip < parkLo || out.Rip > parkHi {
						return ErrEscaped
					}
					if rest == nil {
						return nil
					}
					back := *out
					back.Rip, back.Orig_rax = parkHi, ^uint64(0)
					if err := unix.PtraceSetRegs(k.Pid, &back); err != nil {
						return &Error{"setregs", k.Pid, err}
					}
					killPoint("park-back")
					return k.putBack(restMask, rest)
				}
				if uint32(ws)>>16 == 0 {
					switch ws.StopSignal() {
					case unix.SIGSTOP:
						sig = int(unix.SIGSTOP)
					default:
						if err := unix.PtraceGetRegs(k.Pid, out); err != nil {
							return &Error{"getregs", k.Pid, err}
						}
						return &StopError{Pid: k.Pid, Sig: ws.StopSignal()}
					}
				}
				if err := ptrace(unix.PTRACE_CONT, k.Pid, 0, uintptr(sig)); err != nil {
					return &Error{"cont", k.Pid, err}
				}
				sig = 0
				continue
			}
			if !interrupted {
				if r, err := unix.ProcessVMReadv(k.Pid, local, remote, 0); err == nil && r == 8 && binary.LittleEndian.Uint64(fbuf[:]) == 1 {
					if err := ptrace(unix.PTRACE_INTERRUPT, k.Pid, 0, 0); err != nil {
						return &Error{"interrupt", k.Pid, err}
					}
					interrupted = true
					killPoint("batch-interrupted")
					continue
				}
			}
			if n&63 == 63 {
				if time.Now().After(deadline) {
					werr := &Error{"wait", k.Pid, ErrTimeout}
					if serr := k.stopRunning(); serr != nil {
						return fmt.Errorf("%w (and the task could not be stopped: %v)", werr, serr)
					}
					if gerr := unix.PtraceGetRegs(k.Pid, out); gerr != nil {
						return fmt.Errorf("%w (and getregs failed: %v)", werr, gerr)
					}
					return werr
				}
				if n > 4096 {
					time.Sleep(50 * time.Microsecond)
				}
			}
		}
	})
}
