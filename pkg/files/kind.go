package files

import (
	"fmt"
	"io"
	"sync"

	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// Kind is one kind of open file description (a pipe end, an eventfd, a
// regular file, ...): how cr recognises it in a process's fd table, saves
// it into its image record (an image.File whose Type is the kind's Type)
// and makes it again. Each kind lives in one file of this package, which
// holds both directions, and is listed once in kinds (registry.go); the
// collector (collect.go) and restore's fd installer know no kind by name.
// CRIU's struct fdtype_ops (criu/files.c) is the model.
//
// What a kind may need besides is asked for with the small optional
// interfaces below (Resolver, Checker, InTask, Fixer, ExternalEnd,
// Describer), found by type assertion.
type Kind interface {
	// Type is the record's type name in the image (image.File.Type):
	// never reused, part of the format.
	Type() string
	// Recognize tells whether the fd p is of this kind (from its link text,
	// its stat and its fdinfo). The first kind of the registry that
	// recognises an fd owns it.
	Recognize(p *Probe) bool
	// Dump fills what is particular to the kind into f, whose common
	// fields (Type, Flags, Pos, Ident) are set. State cr cannot save is
	// refused with an *UnsupportedError (see IsRefusal); any other error
	// is a failure to read it.
	Dump(p *Probe, f *image.File) error
	// Validate checks a loaded record's kind-specific fields against their
	// domain (the image's other records in c, e.g. a shared memory
	// object), before anything is made. The message is one line.
	Validate(c *image.Checkpoint, f *image.File) error
	// Open makes cr's own descriptor (close-on-exec) of the description
	// f, with its flags and offset; restore passes it into the task
	// (SCM_RIGHTS). o keeps what the kind's descriptions share during one
	// restore (both ends of a pipe, a socketpair).
	Open(o *Opener, f *image.File) (int, error)
}

// Resolver is a kind whose descriptions are completed across the whole
// collection, once every process's fds are read (Collector.Finish): both
// ends of a pipe, socket peers, epoll targets. Resolve gets every
// description of the kind, in collection order; it records what cr cannot
// save with c.Refuse and returns only failures to read.
type Resolver interface {
	Resolve(c *Collector, files []*image.File) error
}

// resolvesEmpty is a Resolver whose Resolve runs even when the collection
// holds none of its kind's descriptions.
type resolvesEmpty interface{ resolvesEmpty() }

// Checker is a kind whose restore needs something of this machine (a path
// to reopen, a terminal): Check looks, before anything is created. Not
// called for external files, nor for procfs paths naming a process
// (CheckProcPath covers those).
type Checker interface {
	Check(env Env, f *image.File) error
}

// InTask is a kind made by a syscall injected into the task rather than
// passed in (an epoll instance holds its interest list, which names the
// task's own fds). Call returns the syscall (number and arguments) that
// makes a new description of f at the task's lowest free fd; the first
// process holding f makes it, the others get it from cr like any file.
type InTask interface {
	Call(f *image.File, cloexec bool) (nr uintptr, args []uintptr)
}

// Fixer is a kind whose descriptions need other files in place first
// (epoll interest lists): Fix runs once every fd of the process is
// installed, with the descriptions of the kind that this process made
// (InTask) or received.
type Fixer interface {
	Fix(t Task, files []*image.File) error
}

// ExternalEnd is a kind that, made external (image.File.External: the
// caller gives the descriptor at restore), still puts saved state into the
// caller's descriptor fd (a pipe's unread bytes).
type ExternalEnd interface {
	FillExternal(fd int, f *image.File) error
}

// Describer is a kind that names its descriptions in `cr show` otherwise
// than by their path (Ident.Path, the fd link text at the dump).
type Describer interface {
	Describe(f *image.File) string
}

// Probe is an fd being read: what every kind's Recognize and Dump start
// from.
type Probe struct {
	Pid, Fd  int
	Link     string // /proc/PID/fd/N
	Target   string // the link's text: a path, "pipe:[INO]", "anon_inode:[eventfd]", ...
	Info     string // /proc/PID/fdinfo/N
	Flags    uint32 // open flags (fdinfo "flags:", FD_CLOEXEC apart)
	Ident    image.FileIdent
	AllowTTY bool // terminals are saved (a shell job), not refused
	// GhostLimit is the largest deleted file saved, in bytes (0:
	// DefaultGhostLimit; ghost.go).
	GhostLimit int64
	TCP        *TCPDump // the collection's TCP sockets (nil: a private one)
	// FileLocks: the fd's locks are saved (--file-locks), not refused.
	FileLocks bool

	statOnce sync.Once
	st       unix.Stat_t
	stErr    error
	sockOnce sync.Once
	sock     [3]int // SO_DOMAIN, SO_TYPE, SO_PROTOCOL (sockKind)
}

// Stat is stat(2) of the fd's file (through its /proc link), read once.
func (p *Probe) Stat() (*unix.Stat_t, error) {
	p.statOnce.Do(func() { p.stErr = unix.Stat(p.Link, &p.st) })
	if p.stErr != nil {
		return nil, fmt.Errorf("fd %d: %w", p.Fd, p.stErr)
	}
	return &p.st, nil
}

// Mode is the file type bits of the fd's file (S_IFMT).
func (p *Probe) Mode() uint32 { return p.Ident.Mode & unix.S_IFMT }

// IsPath tells whether the fd names a file by path (not "pipe:[...]",
// "anon_inode:...", "socket:[...]").
func (p *Probe) IsPath() bool { return len(p.Target) > 0 && p.Target[0] == '/' }

// ByType returns the kind whose records have type typ, or nil.
func ByType(typ string) Kind {
	for _, k := range kinds {
		if k.Type() == typ {
			return k
		}
	}
	return nil
}

// recognize returns the kind that owns the fd p, or nil.
func recognize(p *Probe) Kind {
	for _, k := range kinds {
		if k.Recognize(p) {
			return k
		}
	}
	return nil
}

// Validate checks every file record of a loaded image with its kind
// (Kind.Validate): a known type, and each field in its domain. The error
// is an *image.FormatError naming files.img and the file.
func Validate(c *image.Checkpoint) error {
	for i := range c.Files {
		f := &c.Files[i]
		k := ByType(f.Type)
		if k == nil {
			return &image.FormatError{File: image.FilesFile, Msg: fmt.Sprintf("file %d: unknown type %q", f.ID, f.Type)}
		}
		err := k.Validate(c, f)
		if err == nil {
			err = validateLocks(c, f)
		}
		if err != nil {
			return &image.FormatError{File: image.FilesFile, Msg: fmt.Sprintf("file %d: %v", f.ID, err)}
		}
	}
	return nil
}

// Load reads the image in dir (image.Load: the framing and every record)
// and checks its file records (Validate): what restore, its pre-commit
// check and `cr show` read an image with.
func Load(dir string) (*image.Checkpoint, error) {
	c, err := image.Load(dir)
	if err != nil {
		return nil, err
	}
	if err := Validate(c); err != nil {
		return nil, err
	}
	return c, nil
}

// Describe is the one-line name of a description in `cr show`: its kind's
// (Describer), else its path or link text at the dump.
func Describe(f *image.File) string {
	if d, ok := ByType(f.Type).(Describer); ok {
		return d.Describe(f)
	}
	return f.Ident.Path
}

// WriteSummary is image.WriteSummary with each description named by its
// kind (Describe).
func WriteSummary(w io.Writer, c *image.Checkpoint) {
	image.WriteSummaryWith(w, c, Describe)
}

// need is the message of a record missing the part its kind needs.
func need(ok bool, f *image.File, what string) error {
	if !ok {
		return fmt.Errorf("a %s without its %s", f.Type, what)
	}
	return nil
}

// SetFlags sets the status flags (O_NONBLOCK, O_APPEND, ...) of an open
// file (fcntl F_SETFL; the access mode and creation flags are ignored).
func SetFlags(fd int, flags uint32) error {
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, int(flags)); err != nil {
		return fmt.Errorf("set flags %#o: %w", flags, err)
	}
	return nil
}

// Kinds returns the registry, in order (a copy).
func Kinds() []Kind { return append([]Kind(nil), kinds...) }
