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
// Errors from the injected syscall are returned as unix.Errno wrapped in
// *SyscallError, so callers can use errors.Is(err, unix.EPERM).
package parasite
