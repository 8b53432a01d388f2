package dump

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

// A shell holds its terminal at fds 0, 1, 2 and 255: one line, not four.
func TestMergeShellJobs(t *testing.T) {
	other := errors.New("something else")
	in := []error{
		&ShellJobError{Pid: 7, What: "x", tty: "/dev/pts/3", fds: []int{0}},
		other,
		&ShellJobError{Pid: 7, What: "x", tty: "/dev/pts/3", fds: []int{1}},
		&ShellJobError{Pid: 8, What: "y", tty: "/dev/pts/3", fds: []int{0}},
		&ShellJobError{Pid: 7, What: "x", tty: "/dev/pts/3", fds: []int{255}},
		&ShellJobError{Pid: 7, What: "belongs to session 5"},
	}
	out := mergeShellJobs(in)
	require.Len(t, out, 4)
	require.Equal(t, "pid 7 has the terminal /dev/pts/3 open at fds 0, 1, 255: dump it with --shell-job (and restore it with --shell-job)", out[0].Error())
	require.Equal(t, other, out[1])
	require.Equal(t, "pid 8 y: dump it with --shell-job (and restore it with --shell-job)", out[2].Error())
	require.Equal(t, "pid 7 belongs to session 5: dump it with --shell-job (and restore it with --shell-job)", out[3].Error())
}
