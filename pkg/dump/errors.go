package dump

import (
	"errors"
	"fmt"

	"github.com/cr-tools/cr/pkg/fdinfo"
	"github.com/cr-tools/cr/pkg/memdump"
)

// UnsupportedError is process state cr cannot save yet.
type UnsupportedError struct {
	Pid  int
	What string
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("pid %d: %s: not supported yet", e.Pid, e.What)
}

// ErrNoProcess says the pid does not exist (or exited).
var ErrNoProcess = errors.New("no such process")

// ErrInterrupted says the dump was interrupted (Options.Abort) and undone.
var ErrInterrupted = errors.New("dump interrupted")

// ErrPermission says cr may not trace the process.
var ErrPermission = errors.New("permission denied")

func unsupported(pid int, err error) error {
	var me *memdump.UnsupportedError
	var fe *fdinfo.UnsupportedError
	switch {
	case errors.As(err, &me):
		return &UnsupportedError{pid, me.What}
	case errors.As(err, &fe):
		if fe.Pid != 0 {
			pid = fe.Pid
		}
		if fe.Fd < 0 { // the cwd or root
			return &UnsupportedError{pid, fe.What}
		}
		return &UnsupportedError{pid, fmt.Sprintf("fd %d is %s", fe.Fd, fe.What)}
	}
	return err
}

// ShellJobError is a process attached to a terminal, or whose session or
// process group lies outside the image: it needs --shell-job.
type ShellJobError struct {
	Pid  int
	What string
}

func (e *ShellJobError) Error() string {
	return fmt.Sprintf("pid %d %s: dump it with --shell-job (and restore it with --shell-job)", e.Pid, e.What)
}
