package files

import (
	"fmt"

	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// Env is what a restore gives the kinds (pkg/restore implements it).
type Env interface {
	// Logf reports progress and notes (-v).
	Logf(format string, args ...any)
	// Terminal names cr's terminal, which a shell job's terminal fds get
	// ("" while only checking an image).
	Terminal() (string, error)
	// Shmem returns cr's fd of the image's shared memory object id, made
	// with its contents the first time (memfds).
	Shmem(id uint64) (int, error)
	// Inherited returns the caller's descriptor that stands for the
	// external file f (image.File.External), which stays the caller's.
	Inherited(f *image.File) (int, error)
}

// Task is the process being rebuilt, as a kind that works inside it sees
// it (InTask, Fixer): pkg/restore implements it with injected syscalls.
type Task interface {
	// Pid is the process's pid.
	Pid() int
	// FdOf returns an fd number of the process that holds file id (-1: none).
	FdOf(id int) int
	// Queue adds an injected syscall to the pending batch; what names it
	// in an error.
	Queue(what string, nr uintptr, args ...uintptr)
	// Flush runs the pending batch; the first failure is the error.
	Flush() error
	// Stash copies b into the task's memory for a queued call and returns
	// its address (valid until the batch has run).
	Stash(b []byte) (uintptr, error)
	// Put copies b into the task's memory for an immediate call (Sys).
	Put(b []byte) (uintptr, error)
	// Sys runs one syscall in the task now (pending calls first).
	Sys(nr uintptr, args ...uintptr) (uintptr, error)
}

// Opener makes cr's own descriptors of an image's open file descriptions
// during one restore, each once, and keeps them (and what the kinds need
// meanwhile) until Close. Not safe for concurrent use.
type Opener struct {
	Env Env
	Ck  *image.Checkpoint

	fds     map[int]int    // file id -> cr's fd of that description
	state   map[string]any // per kind: what its descriptions share
	keep    []int          // fds to close at the end
	late    []func() error // fix-ups once every process is built
	atClose []func()       // run by Close before the descriptors are closed

	// TCPClose restores established TCP connections closed (--tcp-close;
	// see tcp.go).
	TCPClose bool
}

// NewOpener starts the descriptions of one restore of c.
func NewOpener(env Env, c *image.Checkpoint) *Opener {
	return &Opener{Env: env, Ck: c, fds: map[int]int{}, state: map[string]any{}}
}

// Open returns cr's fd of the description f, making it the first time
// (Kind.Open, or for an external file a copy of the caller's descriptor).
func (o *Opener) Open(f *image.File) (int, error) {
	if fd, ok := o.fds[f.ID]; ok {
		return fd, nil
	}
	k := ByType(f.Type)
	if k == nil {
		return 0, fmt.Errorf("image is inconsistent: file %d has the unknown type %q", f.ID, f.Type)
	}
	var fd int
	var err error
	if f.External != "" {
		fd, err = o.external(k, f)
	} else {
		fd, err = k.Open(o, f)
	}
	if err != nil {
		return 0, err
	}
	o.fds[f.ID] = fd
	return fd, nil
}

// external returns cr's own descriptor of the caller's fd that replaces the
// external file f. Its open file description is the caller's: its flags and
// offset are not changed.
func (o *Opener) external(k Kind, f *image.File) (int, error) {
	src, err := o.Env.Inherited(f)
	if err != nil {
		return 0, err
	}
	fd, err := unix.FcntlInt(uintptr(src), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("%s: the inherited fd %d: %w", f.External, src, err)
	}
	if e, ok := k.(ExternalEnd); ok {
		if err := e.FillExternal(fd, f); err != nil {
			unix.Close(fd)
			return 0, err
		}
	}
	return fd, nil
}

// Have returns cr's fd of file id, if it has one.
func (o *Opener) Have(id int) (int, bool) {
	fd, ok := o.fds[id]
	return fd, ok
}

// Set records fd as cr's descriptor of file id (a description made in a
// task, copied out for the other processes that hold it); Close closes it.
func (o *Opener) Set(id, fd int) { o.fds[id] = fd }

// Keep has Close close fd (a descriptor a kind holds for the whole restore).
func (o *Opener) Keep(fd int) { o.keep = append(o.keep, fd) }

// Late runs f once every process is built (Finish): e.g. a socket shut
// down only once every queued message is in.
func (o *Opener) Late(f func() error) { o.late = append(o.late, f) }

// Finish runs the fix-ups Late registered, in order.
func (o *Opener) Finish() error {
	for i := 0; i < len(o.late); i++ { // a fix-up may add more
		if err := o.late[i](); err != nil {
			return err
		}
	}
	return nil
}

// AtClose has Close run f before it closes the descriptors (a kind that
// must put its sockets in a quiet state first when the restore failed).
func (o *Opener) AtClose(f func()) { o.atClose = append(o.atClose, f) }

// Close closes every descriptor cr made or kept.
func (o *Opener) Close() {
	for _, f := range o.atClose {
		f()
	}
	o.atClose = nil
	for _, fd := range o.fds {
		unix.Close(fd)
	}
	for _, fd := range o.keep {
		unix.Close(fd)
	}
	o.fds, o.keep = map[int]int{}, nil
}

// stateOf returns the kind's per-restore state of type T, made the first
// time.
func stateOf[T any](o *Opener, k Kind) *T {
	if s, ok := o.state[k.Type()]; ok {
		return s.(*T)
	}
	s := new(T)
	o.state[k.Type()] = s
	return s
}

// ChangedFileError is a file the image depends on that changed since the
// dump.
type ChangedFileError struct {
	Path string
	What string
}

func (e *ChangedFileError) Error() string {
	return fmt.Sprintf("%s changed since the dump (%s): restoring would run different code or data", e.Path, e.What)
}
