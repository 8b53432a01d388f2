package parasite

import (
	"bytes"
	"fmt"

	"github.com/cr-tools/cr/pkg/ptrace"
	"golang.org/x/sys/unix"
)

// SyscallError is an injected syscall that returned an error.
type SyscallError struct {
	Nr  uintptr
	Err unix.Errno
}

func (e *SyscallError) Error() string {
	return fmt.Sprintf("injected syscall %d: %v", e.Nr, e.Err)
}
func (e *SyscallError) Unwrap() error { return e.Err }

// Injector runs syscalls inside one stopped task.
type Injector struct {
	task    *ptrace.Task
	SysAddr uintptr // address of a `syscall` (0f 05) instruction in the task
	saved   *ptrace.Regs
	mask    uint64
	cur     ptrace.Regs
	// batchCode is the code address whose bytes Batch last checked.
	batchCode uintptr
	// Count is the number of syscalls injected so far.
	Count int

	// Fail-safe injection (failsafe.go).
	failsafe    bool      // rest state = own registers and mask; frames while injected
	tgid        int       // the task's process
	xsave       []byte    // the task's XSAVE area, for frames
	maps        []mapping // the task's mappings when New ran
	sysRet      uintptr   // a vdso `syscall` followed by `xor...; ret` (0: none)
	frameTried  bool
	frameAddr   uint64 // the frame below the stack for single syscalls (0: none)
	frameOrig   []byte // what the frame overwrote
	pageFrameAt uintptr
	escaped     bool // the task went back to its own code by itself
	batchFS     bool // the code at batchCode is the fail-safe page
}

// New prepares injection into task, which must be in a ptrace stop. sysAddr
// is the address of a `syscall` instruction mapped executable in the task.
// It saves the registers and the signal mask and blocks every signal.
func New(task *ptrace.Task, sysAddr uintptr) (*Injector, error) {
	regs, err := task.GetRegs()
	if err != nil {
		return nil, err
	}
	mask, err := task.GetSigmask()
	if err != nil {
		return nil, err
	}
	in := &Injector{task: task, SysAddr: sysAddr, saved: regs, mask: mask, cur: *regs}
	// A task seized without PTRACE_O_EXITKILL (a dump) outlives a killed cr:
	// inject fail-safe (failsafe.go). Its signal mask is then blocked only
	// while injected code runs.
	if opts, ok := task.Options(); ok && opts&exitKillFlag == 0 && !failsafeOff() {
		if err := in.setupFailsafe(opts); err != nil {
			return nil, err
		}
		return in, nil
	}
	// Block everything but SIGTRAP: the single-step trap is a forced signal,
	// and forcing a blocked signal resets its handler to SIG_DFL
	// (kernel/signal.c, force_sig_info_to_task), which would silently drop a
	// SIGTRAP handler (Go programs have one).
	if err := task.SetSigmask(injectMask); err != nil {
		return nil, err
	}
	return in, nil
}

// Saved returns the registers the task had before injection.
func (in *Injector) Saved() *ptrace.Regs { return in.saved }

// SavedMask returns the signal mask the task had before injection.
func (in *Injector) SavedMask() uint64 { return in.mask }

// Syscall runs syscall nr with up to six arguments in the task and returns
// its result.
func (in *Injector) Syscall(nr uintptr, args ...uintptr) (uintptr, error) {
	var a [6]uintptr
	copy(a[:], args)
	r := in.cur
	r.Rax = uint64(nr)
	r.Orig_rax = ^uint64(0) // no syscall-restart fix-ups on the way out of the stop
	r.Rdi, r.Rsi, r.Rdx, r.R10, r.R8, r.R9 = uint64(a[0]), uint64(a[1]), uint64(a[2]), uint64(a[3]), uint64(a[4]), uint64(a[5])
	r.Rip = uint64(in.SysAddr)
	r.Eflags &^= 0x100 | 0x400 // TF, DF
	in.Count++
	var out ptrace.Regs
	if in.failsafe {
		if in.escaped {
			return 0, fmt.Errorf("injected syscall %d: %w", nr, ptrace.ErrEscaped)
		}
		if f := in.stackFrame(); f != 0 {
			// After the syscall the vdso code returns through the frame's
			// first slot into rt_sigreturn, if nobody stops the task.
			r.Rip, r.Rsp = uint64(in.sysRet), f
		}
		if err := in.task.InjectSyscallStops(&r, injectMask, &out, in.mask, in.saved); err != nil {
			return 0, fmt.Errorf("injected syscall %d: %w", nr, err)
		}
	} else if err := in.task.Inject(&r, &out); err != nil {
		return 0, fmt.Errorf("injected syscall %d: %w", nr, err)
	}
	if out.Rip != r.Rip+2 {
		return 0, fmt.Errorf("injected syscall %d: task stopped at %#x, not after the syscall at %#x", nr, out.Rip, r.Rip)
	}
	ret := out.Rax
	if int64(ret) < 0 && int64(ret) > -4096 {
		return 0, &SyscallError{Nr: nr, Err: unix.Errno(-int64(ret))}
	}
	return uintptr(ret), nil
}

// Release puts back the registers and signal mask saved by New.
func (in *Injector) Release() error {
	if in.escaped {
		// The task is back in its own code with its own registers and mask
		// (rt_sigreturn), and has run on: nothing to put back.
		return nil
	}
	if in.frameOrig != nil {
		if err := ptrace.Write(in.task.Pid, uintptr(in.frameAddr), in.frameOrig); err != nil {
			return err
		}
		in.frameOrig, in.frameAddr, in.frameTried = nil, 0, false
	}
	if err := in.task.SetRegs(in.saved); err != nil {
		return err
	}
	return in.task.SetSigmask(in.mask)
}

// SetBase changes the registers used as the base for injected syscalls
// (restore uses it once the task's final registers are known).
func (in *Injector) SetBase(r *ptrace.Regs) { in.cur = *r }

// FindSyscall returns the address of the first `syscall` instruction
// (0f 05) in code, which is mapped at base.
func FindSyscall(code []byte, base uintptr) (uintptr, bool) {
	i := bytes.Index(code, []byte{0x0f, 0x05})
	if i < 0 {
		return 0, false
	}
	return base + uintptr(i), true
}
