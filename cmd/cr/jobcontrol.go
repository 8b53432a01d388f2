package main

import (
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// waitJob waits for the restored process pid to exit and returns its
// status. For a shell job (--shell-job) that leads its own process group,
// restored in cr's session (or whose terminal's foreground group at the
// dump, another group of the image, is given as foreground: a job the
// shell had started), while cr runs in the foreground of the
// terminal on fd 0, it does what a shell's job control does (bash's
// jobs.c, give_terminal_to): the job gets the terminal (TIOCSPGRP) so that
// it reads it and gets the keyboard's signals (^C, ^Z, ^\) itself; when it
// stops (^Z, SIGSTOP), cr takes the terminal back and stops too, so that
// the shell that started `cr restore` sees a stopped job; when cr is
// continued (fg), it gives the terminal back and continues the job. When
// the job exits, cr takes the terminal back.
func waitJob(pid, foreground int, shellJob bool) (unix.WaitStatus, error) {
	own := unix.Getpgrp()
	job, err := foreground, error(nil)
	if job == 0 {
		job, err = unix.Getpgid(pid)
	}
	fg, ferr := unix.IoctlGetInt(0, unix.TIOCGPGRP)
	if !shellJob || err != nil || job == own || ferr != nil || fg != own {
		return waitExit(pid)
	}
	// A process of a background group that sets the foreground group gets
	// SIGTTOU: cr does that when it takes the terminal back.
	signal.Ignore(syscall.SIGTTOU, syscall.SIGTTIN)
	give := func() { unix.IoctlSetPointerInt(0, unix.TIOCSPGRP, job) }
	take := func() { unix.IoctlSetPointerInt(0, unix.TIOCSPGRP, own) }
	give()
	defer take()
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(pid, &ws, unix.WUNTRACED, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || !ws.Stopped() {
			return ws, err
		}
		if s := ws.StopSignal(); s == unix.SIGTTIN || s == unix.SIGTTOU {
			if cur, err := unix.IoctlGetInt(0, unix.TIOCGPGRP); err == nil && cur == job {
				// It touched the terminal in the moment between its
				// release and give(): it has the terminal now.
				unix.Kill(-job, unix.SIGCONT)
				continue
			}
		}
		take()
		// Stop until the shell continues cr (fg). kill(2) of the whole
		// process returns before every thread has stopped, so wait for
		// the SIGCONT: only then may cr give the terminal back.
		cont := make(chan os.Signal, 1)
		signal.Notify(cont, syscall.SIGCONT)
		unix.Kill(os.Getpid(), unix.SIGSTOP)
		<-cont
		signal.Stop(cont)
		give()
		unix.Kill(-job, unix.SIGCONT)
	}
}

// waitExit waits for the child pid to exit.
func waitExit(pid int) (unix.WaitStatus, error) {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		return ws, err
	}
}
