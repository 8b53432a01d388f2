// Package ptrace is cr's tracer: the only package that calls ptrace(2),
// wait4(2) and process_vm_readv/writev(2).
//
// A tracee belongs to the OS thread that attached it, so every request goes
// through one goroutine locked to one OS thread for the lifetime of a Tracer
// (the same shape as Delve's pkg/proc/native execPtraceFunc). Callers hold
// *Task values and call their methods from any goroutine; the methods hop to
// the tracer thread.
//
// Errors are *Error values naming the request and the pid; compare the
// underlying errno with errors.Is. A task that disappeared is reported as
// *ExitedError.
package ptrace
