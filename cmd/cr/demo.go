package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cr-tools/cr/pkg/dump"
	"github.com/cr-tools/cr/pkg/files"
	"github.com/cr-tools/cr/pkg/restore"
	"golang.org/x/sys/unix"
)

// demoCounter is the program the demo checkpoints: it counts, printing a
// line every 100 ms.
const demoCounter = `#include <stdio.h>
#include <time.h>
#include <unistd.h>
int main(void) {
	struct timespec ts = {0, 100 * 1000 * 1000};
	for (unsigned long n = 1;; n++) {
		printf("count %lu\n", n);
		fflush(stdout);
		nanosleep(&ts, NULL);
	}
}
`

// cmdDemo compiles a counting program, shows it counting, dumps it (it
// stops), restores it and shows it counting on from where it stopped.
func cmdDemo(args []string) (int, error) {
	c := newCommand("demo", "cr demo [--keep]",
		`Compile a small counting program (needs gcc), show it counting, dump it
(it stops), show the image, restore it and show it counting on from where
it stopped, with the same pid. Needs root.`,
		"cr demo")
	keep := c.fs.Bool("keep", false, "keep the work directory (program, log, image)")
	if err := c.parse(args, false); err != nil {
		return 0, err
	}
	return 0, demo(*keep)
}

func demo(keep bool) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("the demo needs root (ptrace, clone3 with set_tid)")
	}
	// Don't hand our own stray fds (some environments pass a few) to the demo
	// program: cr would rightly refuse to dump, say, an inherited pipe.
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		for _, e := range ents {
			var fd int
			if _, err := fmt.Sscan(e.Name(), &fd); err == nil && fd > 2 {
				unix.CloseOnExec(fd)
			}
		}
	}
	work, err := os.MkdirTemp("", "cr-demo-")
	if err != nil {
		return err
	}
	if !keep {
		defer os.RemoveAll(work)
	}
	src := filepath.Join(work, "counter.c")
	bin := filepath.Join(work, "counter")
	if err := os.WriteFile(src, []byte(demoCounter), 0o644); err != nil {
		return err
	}
	if out, err := exec.Command("gcc", "-O1", "-o", bin, src).CombinedOutput(); err != nil {
		return fmt.Errorf("compile the demo program (is gcc installed?): %v\n%s", err, out)
	}
	logPath := filepath.Join(work, "log")
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	null, _ := os.Open(os.DevNull)
	pid, err := syscall.ForkExec(bin, []string{bin}, &syscall.ProcAttr{
		Dir: work, Files: []uintptr{null.Fd(), logf.Fd(), logf.Fd()},
		Sys: &syscall.SysProcAttr{Setsid: true},
	})
	logf.Close()
	null.Close()
	if err != nil {
		return err
	}
	defer func() { unix.Kill(pid, unix.SIGKILL); var ws unix.WaitStatus; unix.Wait4(pid, &ws, 0, nil) }()

	step := func(format string, a ...any) { fmt.Printf("\n== "+format+"\n", a...) }
	step("started %s as pid %d; it prints a count every 100 ms:", bin, pid)
	time.Sleep(1200 * time.Millisecond)

	img := filepath.Join(work, "image")
	step("cr dump -t %d -o %s", pid, img)
	res, err := dump.Run(context.Background(), dump.Options{Pid: pid, Dir: img})
	if err != nil {
		return err
	}
	fmt.Printf("   dumped %d pages; the process was frozen for %v and then killed\n", res.Pages, res.Frozen.Round(time.Microsecond))
	if err := unix.Kill(pid, 0); err != nil {
		fmt.Printf("   kill -0 %d: %v: the process is gone\n", pid, err)
	}
	time.Sleep(500 * time.Millisecond)
	before := tail(logPath, -1) // everything it printed before the dump
	fmt.Printf("   its last lines, unchanged half a second later: %s\n", strings.Join(lastN(before, 2), " | "))

	step("cr show -i %s", img)
	ck, err := files.Load(img)
	if err != nil {
		return err
	}
	files.WriteSummary(indent{os.Stdout}, ck)

	step("cr restore -i %s", img)
	rres, err := restore.Run(context.Background(), restore.Options{Dir: img})
	if err != nil {
		return err
	}
	fmt.Printf("   restored pid %d in %v\n", rres.Pid, rres.Duration.Round(time.Microsecond))
	time.Sleep(500 * time.Millisecond)
	after := tail(logPath, -1)
	if len(before) == 0 || len(after) <= len(before) {
		return fmt.Errorf("the restored program printed nothing in half a second")
	}
	fmt.Printf("   the last line before the dump:     %s\n", before[len(before)-1])
	fmt.Printf("   the first line after the restore:  %s\n", after[len(before)])
	fmt.Printf("   and then: %s\n", strings.Join(after[len(before)+1:min(len(after), len(before)+4)], " | "))
	fmt.Println("   it counts on from where it stopped, with the same pid.")
	return nil
}

type indent struct{ f *os.File }

func (w indent) Write(p []byte) (int, error) {
	s := strings.ReplaceAll(strings.TrimRight(string(p), "\n"), "\n", "\n   ")
	fmt.Fprint(w.f, "   "+s+"\n")
	return len(p), nil
}

// lastN is the last n lines of lines.
func lastN(lines []string, n int) []string {
	if len(lines) > n {
		return lines[len(lines)-n:]
	}
	return lines
}

// tail is the last n lines of the file (n < 0: all of them).
func tail(path string, n int) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var lines []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		lines = append(lines, s.Text())
	}
	if n < 0 {
		return lines
	}
	return lastN(lines, n)
}
