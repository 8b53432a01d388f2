// Package procfs parses the per-process files of /proc that cr reads:
// stat, status and auxv. It only reads; it never talks to the task.
//
// A process can exit and be reaped at any moment, also between the open
// and the read of one of its files (the read then fails with ESRCH). Every
// reader here reports that as ErrNoProcess (test with errors.Is): the pid
// is free, not an error of cr.
package procfs
