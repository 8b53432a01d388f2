// Package files reads a process's file descriptor table and open-file
// state from /proc/PID/fd and /proc/PID/fdinfo: path, open flags, offset,
// identity, FD_CLOEXEC, and which fds share one open file description
// (kcmp(2) KCMP_FILE). It also reads cwd and root.
//
// Kinds of file that cannot be saved yet are refused with an
// *UnsupportedError that names the fd and the kind, e.g. "fd 5 is a pidfd".
//
// Procfs paths naming a process (/proc/self, /proc/thread-self, /proc/PID,
// anything below; fds, cwd and root) are recorded relative to that pid
// (image.ProcPath); the pid must be a running process of the collection and
// a task/TID part must name its main thread, and cr opens the path as
// restore will before the dump commits. Other /proc files (/proc/meminfo)
// are ordinary files.
//
// Pipes and FIFOs keep the bytes waiting in them, read without consuming
// them (tee(2)); when a description is in packet mode (O_DIRECT) the packet
// boundaries are learnt too (teePackets).
//
// File locks are not restored yet, so an fd with a "lock:" line in its
// fdinfo (flock, POSIX, OFD locks and leases the process or the open file
// description holds: show_fd_locks in fs/locks.c) is refused, naming the
// file and the lock. Not covered: a flock or OFD lock whose description is
// held only by a process outside the tree or by an SCM_RIGHTS message in
// flight (the lock is not the tree's to restore then).
//
// A fired EPOLLONESHOT entry (Disarmed) is refused unless its file is ready
// for some event: restore brings it back disarmed by letting it fire once.
package files
