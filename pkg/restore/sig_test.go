package restore_test

import "golang.org/x/sys/unix"

func syscallKill(pid int, sig string) error {
	s := map[string]unix.Signal{"USR1": unix.SIGUSR1, "USR2": unix.SIGUSR2, "TERM": unix.SIGTERM}[sig]
	return unix.Kill(pid, s)
}
