package dump

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/cr-tools/cr/pkg/files"
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

// ErrInterrupted says the dump was interrupted (its context was cancelled,
// or Options.Abort closed) and undone: the tree runs on as before, nothing
// was written. The error wraps the context's error too.
var ErrInterrupted = errors.New("dump interrupted")

// causeError is a message that says everything itself, wrapping a sentinel
// error (ErrPermission, ...) for errors.Is without repeating its text.
type causeError struct {
	msg string
	err error
}

func (e *causeError) Error() string { return e.msg }
func (e *causeError) Unwrap() error { return e.err }

// ErrPermission says cr may not trace the process.
var ErrPermission = errors.New("permission denied")

// RefusedError lists every reason a dump of the tree rooted at Pid was
// refused (each an *UnsupportedError, a *ShellJobError or a plain error
// naming the process), in the order found: processes parents first, then
// what spans processes (pipes, sockets, sessions). errors.As finds any of
// them. The dump left the tree running as it was.
type RefusedError struct {
	Pid     int
	Reasons []error
}

func (e *RefusedError) Error() string {
	if len(e.Reasons) == 1 {
		return e.Reasons[0].Error()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "cannot dump process %d, for %d reasons:", e.Pid, len(e.Reasons))
	for _, r := range e.Reasons {
		b.WriteString("\n  ")
		b.WriteString(r.Error())
	}
	return b.String()
}

// Unwrap returns the reasons.
func (e *RefusedError) Unwrap() []error { return e.Reasons }

// isRefusal tells whether err is state cr cannot save (memdump's or
// pkg/files' refusals), as opposed to a failure to read it.
func isRefusal(err error) bool {
	var me *memdump.UnsupportedError
	return errors.As(err, &me) || files.IsRefusal(err)
}

// refusals turns err, a refusal or several joined (errors.Join), into the
// dump's refusals of process pid.
func refusals(pid int, err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, refusals(pid, e)...)
		}
		return out
	}
	var te *files.TTYError
	if errors.As(err, &te) {
		if te.Pid != 0 {
			pid = te.Pid
		}
		return []error{&ShellJobError{Pid: pid, What: fmt.Sprintf("has the terminal %s open at fd %d", te.Terminal(), te.Fd), tty: te.Terminal(), fds: []int{te.Fd}}}
	}
	return []error{unsupported(pid, err)}
}

func unsupported(pid int, err error) error {
	var me *memdump.UnsupportedError
	var fe *files.UnsupportedError
	switch {
	case errors.As(err, &me):
		return &UnsupportedError{pid, me.What}
	case errors.As(err, &fe):
		if fe.Pid != 0 {
			pid = fe.Pid
		}
		if fe.Option == "--shell-job" { // a terminal: What says what the process has
			return &ShellJobError{Pid: pid, What: fe.What}
		}
		if fe.Why != "" || fe.Option != "" { // the message gives the reason, or the option, in full
			return fmt.Errorf("pid %d: %w", pid, fe)
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

	tty string // the terminal held at fds (merged by mergeShellJobs)
	fds []int
}

func (e *ShellJobError) Error() string {
	return fmt.Sprintf("pid %d %s: dump it with --shell-job (and restore it with --shell-job)", e.Pid, e.What)
}

// mergeShellJobs turns the terminal refusals of one process (one per fd:
// 0, 1, 2, 255 of a shell) into one line naming every fd.
func mergeShellJobs(reasons []error) []error {
	var out []error
	first := map[[2]any]*ShellJobError{}
	for _, r := range reasons {
		se, ok := r.(*ShellJobError)
		if !ok || se.tty == "" {
			out = append(out, r)
			continue
		}
		k := [2]any{se.Pid, se.tty}
		if f := first[k]; f != nil {
			f.fds = append(f.fds, se.fds...)
			strs := make([]string, len(f.fds))
			for i, fd := range f.fds {
				strs[i] = strconv.Itoa(fd)
			}
			f.What = fmt.Sprintf("has the terminal %s open at fds %s", f.tty, strings.Join(strs, ", "))
			continue
		}
		c := *se
		first[k] = &c
		out = append(out, &c)
	}
	return out
}
