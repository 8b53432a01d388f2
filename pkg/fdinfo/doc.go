// Package fdinfo reads a process's file descriptor table and open-file
// state from /proc/PID/fd and /proc/PID/fdinfo: path, open flags, offset,
// identity, FD_CLOEXEC, and which fds share one open file description
// (kcmp(2) KCMP_FILE). It also reads cwd and root.
//
// Kinds of file that cannot be saved yet are refused with an
// *UnsupportedError that names the fd, e.g. "fd 5 is a pipe".
package fdinfo
