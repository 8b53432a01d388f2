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
	// Block everything but SIGTRAP: the single-step trap is a forced signal,
	// and forcing a blocked signal resets its handler to SIG_DFL
	// (kernel/signal.c, force_sig_info_to_task), which would silently drop a
	// SIGTRAP handler (Go programs have one).
	if err := task.SetSigmask(^uint64(0) &^ (1 << (unix.SIGTRAP - 1))); err != nil {
		return nil, err
	}
	in := &Injector{task: task, SysAddr: sysAddr, saved: regs, mask: mask, cur: *regs}
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
	if err := in.task.Inject(&r, &out); err != nil {
		return 0, fmt.Errorf("injected syscall %d: %w", nr, err)
	}
	if out.Rip != uint64(in.SysAddr)+2 {
		return 0, fmt.Errorf("injected syscall %d: task stopped at %#x, not after the syscall at %#x", nr, out.Rip, in.SysAddr)
	}
	ret := out.Rax
	if int64(ret) < 0 && int64(ret) > -4096 {
		return 0, &SyscallError{Nr: nr, Err: unix.Errno(-int64(ret))}
	}
	return uintptr(ret), nil
}

// Release puts back the registers and signal mask saved by New.
func (in *Injector) Release() error {
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
