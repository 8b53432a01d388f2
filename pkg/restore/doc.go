// Package restore is the restore orchestrator and the other half of cr's Go
// API: Run rebuilds a process from an image directory, with its original
// PID, and lets it continue where it stopped.
//
// How: cr execs a tiny static stub (an ELF built in memory, see stub_amd64.go)
// traced from birth, injects clone3(CLONE_PARENT, set_tid=[pid]) into it to
// get a child with the original PID that is cr's own child and already
// traced, kills the stub, and then reshapes the child by injected syscalls:
// a trampoline page at a free address, the stub's mappings removed, the
// vdso put back at its dumped address, every VMA mapped, pages read in by
// the task itself (preadv from the image's pages file), files reopened at
// their fd numbers with their offsets, cwd/root, mm fields and the exe link
// (PR_SET_MM_MAP), comm, umask, rlimits, signal handlers, rseq, session,
// credentials, and finally registers, XSAVE state and the signal mask.
//
// Everything that can be checked is checked before anything is created
// (format, kernel, CPU features, file identities, the PID). Any failure
// kills the half-built process; PTRACE_O_EXITKILL does the same if cr dies.
// Cancelling Run's context is such a failure, at the next phase boundary
// or page batch. Options.Events reports each phase (validated, created,
// memory done/total, running); Result.Processes lists every pid and tid
// made. Part of cr's supported Go API: docs/API.md.
//
// Open files: the fd table is rebuilt here (task.go: PlanFds numbers the
// fds, restoreFiles sends each description over the SCM_RIGHTS transport
// and dup3s it into place, lifting the NOFILE limit meanwhile), but no kind
// of file is known by name: each is made by its kind in pkg/files, through a
// files.Opener to which the tree restore is the files.Env (log, terminal,
// shared memory objects, inherited descriptors) and each process a
// files.Task (injected syscalls).
package restore
