// Package files saves and restores open files: a process's fd table, its
// cwd and root, and every kind of open file description, one file per kind
// with both directions side by side (CRIU's struct fdtype_ops is the
// model):
//
//	regular.go  regular files          pipe.go      pipes (packet mode, external ends)
//	dir.go      directories            fifo.go      FIFOs
//	chardev.go  character devices      memfd.go     memfds
//	tty.go      terminals (shell job)  eventfd.go   eventfds
//	pty.go      pty pairs in the tree
//	opath.go    O_PATH descriptors     epoll.go     epoll instances
//	procfs.go   /proc/PID/... paths    timerfd.go   timerfds
//	unixsock.go unix socketpairs       refuse.go    what is refused (locks, anon inodes)
//	signalfd.go signalfds              pidfd.go     pidfds
//	inotify.go  inotify instances      fanotify.go  fanotify groups
//	notify.go   (marks' files by handle) ghost.go   deleted and O_TMPFILE files
//	mqueue.go   POSIX message queues   locks.go     file locks (--file-locks)
//
// A kind implements Kind (kind.go): Type (its image record's type name),
// Recognize (from the fd link text, stat and fdinfo), Dump (fill its
// image.File), Validate (a loaded record's fields against their domain) and
// Open (cr's own descriptor, which restore passes into the task), plus the
// optional small interfaces it needs: Resolver (completed across the whole
// tree after collection: pipe ends, socket peers, epoll targets), Checker
// (what restore needs of this machine, before anything is made), InTask
// (made by a syscall injected into the task), Fixer (fix-ups once every fd
// of the process is in place: epoll interest lists), ExternalEnd and
// Describer (its name in `cr show`). registry.go lists the kinds; adding one
// is one file and one line there. The records are in pkg/image/schema.go
// (the format), the types' meaning in docs/IMAGE.md.
//
// Dump side (collect.go): a Collector reads the fd tables of a whole tree
// (/proc/PID/fd, /proc/PID/fdinfo), stores each open file description
// once even when processes share it (kcmp(2) KCMP_FILE, kept sorted so a
// look-up is O(log n)), and Finish runs the Resolvers. CopyFd is
// pidfd_getfd(2), the one way the kinds read a task's descriptor.
//
// Restore side (opener.go): pkg/restore implements Env (its log, cr's
// terminal, shared memory objects, the caller's inherited descriptors) and
// Task (injected syscalls into the process being built) and asks an Opener
// for cr's descriptor of each description, made once; the fd numbering, the
// SCM_RIGHTS transport and the NOFILE limit stay in pkg/restore, which
// knows no kind by name. Load is image.Load followed by every record's
// Validate: what restore, its pre-commit check and `cr show` read with.
//
// Refusals: state cr cannot save yet is refused with an *UnsupportedError
// (or *TTYError for a terminal without --shell-job) naming the fd and the
// kind, e.g. "fd 5 is a userfaultfd"; a collection gathers every refusal and
// reports them together (IsRefusal tells them from failures to read).
//
// Procfs paths naming a process (/proc/self, /proc/thread-self, /proc/PID,
// anything below; fds, cwd and root) are recorded relative to that pid
// (image.ProcPath); the pid must be a running process of the collection and
// a task/TID part must name its main thread, and cr opens the path as
// restore will before the dump commits. Other /proc files (/proc/meminfo)
// are ordinary files.
//
// File locks: without --file-locks (Collector.FileLocks), an fd with a
// "lock:" line in its fdinfo (flock, POSIX, OFD locks and leases the
// process or the open file description holds: show_fd_locks in
// fs/locks.c) is refused, naming the file and the lock. With it, locks.go
// saves them (image.File.Locks) and TakeLocks takes them again at the end
// of each process's build; leases are refused. Not covered: a flock or OFD lock whose description is
// held only by a process outside the tree or by an SCM_RIGHTS message in
// flight (the lock is not the tree's to restore then).
package files
