package files

import (
	"fmt"

	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// tty: a terminal of a shell job (image.FileTTY), saved only with
// --shell-job (else refused with a *TTYError); record image.File with Rdev.
// Restore points it at cr's own terminal (Env.Terminal), not at the path
// it had.
type tty struct{}

func (tty) Type() string { return image.FileTTY }

func (tty) Recognize(p *Probe) bool {
	if !p.IsPath() || p.Mode() != unix.S_IFCHR {
		return false
	}
	st, err := p.Stat()
	return err == nil && IsTTY(st.Rdev)
}

func (tty) Dump(p *Probe, f *image.File) error {
	if !p.AllowTTY {
		return &TTYError{Fd: p.Fd, Path: p.Target}
	}
	st, err := p.Stat()
	if err != nil {
		return err
	}
	f.Rdev = st.Rdev
	return nil
}

func (tty) Validate(*image.Checkpoint, *image.File) error { return nil }

func (tty) Check(env Env, f *image.File) error {
	if _, err := env.Terminal(); err != nil {
		return fmt.Errorf("fd of file %d was the terminal %s: %w", f.ID, f.Ident.Path, err)
	}
	return nil
}

func (tty) Open(o *Opener, f *image.File) (int, error) {
	path, err := o.Env.Terminal()
	if err != nil {
		return 0, err
	}
	return openPath(path, f.Flags)
}

// IsTTY reports whether a character device number is a terminal:
// /dev/tty*, /dev/console, /dev/ptmx (majors 4 and 5) or a pty (136-143).
func IsTTY(rdev uint64) bool {
	maj := unix.Major(rdev)
	return maj == 4 || maj == 5 || (maj >= 136 && maj <= 143)
}

// TTYError is a terminal fd, refused unless the caller allows terminals.
// Pid is the process holding it when it is known here (0: the process
// being read); Note says more of it ("whose master ...").
type TTYError struct {
	Pid  int
	Fd   int
	Path string
	Note string
}

// Terminal names the terminal, with the note if any.
func (e *TTYError) Terminal() string {
	if e.Note == "" {
		return e.Path
	}
	return e.Path + ", " + e.Note + ","
}

func (e *TTYError) Error() string { return fmt.Sprintf("fd %d is the terminal %s", e.Fd, e.Terminal()) }
