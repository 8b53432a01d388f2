// Package parasite runs system calls inside a stopped tracee without
// writing into its code.
//
// An Injector borrows the task's registers: it points rip at an existing
// `syscall` instruction (in the vdso during a dump, in cr's own trampoline
// page during a restore), loads the syscall number and arguments, single-steps
// over the instruction and reads the result. All signals but SIGTRAP are
// blocked in the task while it runs injected code, so nothing is delivered
// (or lost) in the middle; Release puts the original registers and signal
// mask back. (SIGTRAP stays unblocked: the kernel resets the handler of a
// forced signal that is blocked, and the single-step trap is forced.)
//
// Batch runs many independent syscalls in one resume/stop cycle instead of
// one single-step each (about 1µs per syscall instead of 60µs): the task
// runs BatchCode (placed by the caller in an executable page, see
// PrepareBatchPage) over a table of calls in its memory and stops at an
// int3; the results are read back from the table. Anything but that int3
// (a fault, a stray SIGTRAP, a timeout, the task dying) is an error that
// says how far the batch got. A fault in injected code is a forced signal,
// and the kernel resets the handler of a forced signal that is blocked or
// ignored to SIG_DFL even though cr discards the signal: Batch checks the
// code bytes before running them, and the table must be writable.
//
// Fail-safe injection: for a task seized without PTRACE_O_EXITKILL (a dump),
// New switches to a mode in which a SIGKILLed cr leaves the task running as
// before (registers, FPU state, signal mask): the task rests with its own
// registers and mask in harmless stops, and while it runs injected code its
// registers lead to an rt_sigreturn of a signal frame holding its own state.
// Single syscalls then use PTRACE_SYSCALL stops instead of a single step, and
// Batch on a page from PrepareBatchPage parks in a ppoll instead of an int3.
// See failsafe.go; CR_PARASITE_FAILSAFE=off switches it off.
//
// Errors from the injected syscall are returned as unix.Errno wrapped in
// *SyscallError, so callers can use errors.Is(err, unix.EPERM).
package parasite
