package testutil

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Timeouts used by the Proc helpers.
const (
	ReadyTimeout = 10 * time.Second
	CheckTimeout = 10 * time.Second
	KillTimeout  = 5 * time.Second
)

// Proc is a running fixture process.
type Proc struct {
	Pid  int
	Dir  string            // WORKDIR given to the program
	Log  string            // WORKDIR/log: its stdout and stderr
	Info map[string]string // key=value pairs of the READY line

	pos     int64  // log offset up to which lines have been consumed
	counter uint64 // counter value reported by the last Check
	reaped  bool
}

// Start runs `bin WORKDIR extraArgs...` in a new session, with stdin
// /dev/null and stdout/stderr appended to WORKDIR/log (WORKDIR is a fresh
// t.TempDir), and waits for its READY line. The process is killed and reaped
// when the test ends. The test process never blocks in wait(2) for it and
// never waits from another goroutine, so a tracer in the test process keeps
// all ptrace stops.
func Start(t testing.TB, bin string, extraArgs ...string) *Proc {
	t.Helper()
	dir := t.TempDir()
	logPath := filepath.Join(dir, "log")
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()

	argv := append([]string{bin, dir}, extraArgs...)
	pid, err := syscall.ForkExec(bin, argv, &syscall.ProcAttr{
		Dir:   dir,
		Env:   os.Environ(),
		Files: []uintptr{null.Fd(), logf.Fd(), logf.Fd()},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
	if err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	p := &Proc{Pid: pid, Dir: dir, Log: logPath, Info: map[string]string{}}
	t.Cleanup(p.Kill)
	line := p.waitFor(t, "READY line", ReadyTimeout, func(l string) bool {
		return l == "READY" || strings.HasPrefix(l, "READY ")
	})
	p.Info = parseInfo(line)
	return p
}

// Adopt wraps a process the test did not start (e.g. a restored process that
// is a child of the test process, or was reparented to it as subreaper) whose
// WORKDIR is dir. Info comes from the last READY line already in the log;
// only lines written after the call are consumed by WaitLine and Check. The
// process is killed and reaped when the test ends.
func Adopt(t testing.TB, pid int, dir string) *Proc {
	t.Helper()
	p := &Proc{Pid: pid, Dir: dir, Log: filepath.Join(dir, "log"), Info: map[string]string{}}
	t.Cleanup(p.Kill)
	data, err := os.ReadFile(p.Log)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	p.pos = int64(len(data))
	for _, l := range strings.Split(string(data), "\n") {
		if l == "READY" || strings.HasPrefix(l, "READY ") {
			p.Info = parseInfo(l)
		}
	}
	return p
}

func parseInfo(line string) map[string]string {
	m := map[string]string{}
	for _, f := range strings.Fields(line)[1:] {
		if k, v, ok := strings.Cut(f, "="); ok {
			m[k] = v
		}
	}
	return m
}

// LogText returns the whole log.
func (p *Proc) LogText() string {
	b, err := os.ReadFile(p.Log)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	return string(b)
}

// readNew returns the complete lines written after p.pos, without consuming
// them, together with the log offset just past each line.
func (p *Proc) readNew() (lines []string, ends []int64) {
	f, err := os.Open(p.Log)
	if err != nil {
		return nil, nil
	}
	defer f.Close()
	b, err := io.ReadAll(io.NewSectionReader(f, p.pos, 1<<40))
	if err != nil {
		return nil, nil
	}
	off := p.pos
	for {
		i := strings.IndexByte(string(b), '\n')
		if i < 0 {
			return lines, ends
		}
		lines = append(lines, string(b[:i]))
		off += int64(i) + 1
		ends = append(ends, off)
		b = b[i+1:]
	}
}

// waitFor consumes lines until one satisfies match, failing the test on
// timeout or when the process is gone without having written it.
func (p *Proc) waitFor(t testing.TB, what string, timeout time.Duration, match func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		dead := !p.Alive() // checked before reading: no output can follow
		lines, ends := p.readNew()
		for i, l := range lines {
			p.pos = ends[i]
			if match(l) {
				return l
			}
		}
		if dead {
			t.Fatalf("pid %d is gone (%s) while waiting for %s; log:\n%s", p.Pid, p.howDied(), what, p.LogText())
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d: timed out after %v waiting for %s; log:\n%s", p.Pid, timeout, what, p.LogText())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// howDied reaps the process if it is a dead child of the test process and
// says how it ended (exit status or signal), for failure messages.
func (p *Proc) howDied() string {
	var ws unix.WaitStatus
	if wpid, err := unix.Wait4(p.Pid, &ws, unix.WNOHANG|unix.WALL, nil); err != nil || wpid != p.Pid {
		return "not reaped"
	}
	p.reaped = true
	switch {
	case ws.Signaled():
		return fmt.Sprintf("killed by %v, core dumped %v", ws.Signal(), ws.CoreDump())
	case ws.Exited():
		return fmt.Sprintf("exit status %d", ws.ExitStatus())
	}
	return fmt.Sprintf("wait status %#x", uint32(ws))
}

// WaitLine waits for the next line starting with prefix written after the
// last consumed one, and returns it.
func (p *Proc) WaitLine(t testing.TB, prefix string, timeout time.Duration) string {
	t.Helper()
	return p.waitFor(t, fmt.Sprintf("a line starting with %q", prefix), timeout, func(l string) bool {
		return strings.HasPrefix(l, prefix)
	})
}

// Check sends SIGUSR1 and waits for the program's verdict on its own state,
// written after the current end of the log. It fails the test on "FAIL ...",
// on timeout, or if the counter is zero or did not increase since the last
// Check of this Proc. It returns the counter.
func (p *Proc) Check(t testing.TB) uint64 {
	t.Helper()
	if st, err := os.Stat(p.Log); err == nil {
		p.pos = st.Size()
	}
	if err := unix.Kill(p.Pid, unix.SIGUSR1); err != nil {
		t.Fatalf("kill(%d, SIGUSR1): %v", p.Pid, err)
	}
	line := p.waitFor(t, "OK/FAIL after SIGUSR1", CheckTimeout, func(l string) bool {
		return strings.HasPrefix(l, "OK ") || strings.HasPrefix(l, "FAIL")
	})
	if strings.HasPrefix(line, "FAIL") {
		t.Fatalf("pid %d: state check failed: %s", p.Pid, line)
	}
	n, err := strconv.ParseUint(strings.TrimPrefix(line, "OK counter="), 10, 64)
	if err != nil || n == 0 {
		t.Fatalf("pid %d: bad OK line %q", p.Pid, line)
	}
	if n <= p.counter {
		t.Fatalf("pid %d: counter %d did not increase (previous check: %d)", p.Pid, n, p.counter)
	}
	p.counter = n
	return n
}

// Alive reports whether the process exists and is not a zombie.
func (p *Proc) Alive() bool {
	if p.reaped {
		return false
	}
	state, _, _, err := procStat(p.Pid)
	return err == nil && state != 'Z' && state != 'X'
}

// Stop sends SIGUSR2 (the program writes "BYE counter=N" and exits 0), reaps
// the process and returns its exit status (-1 if killed by a signal).
func (p *Proc) Stop(t testing.TB) int {
	t.Helper()
	if err := unix.Kill(p.Pid, unix.SIGUSR2); err != nil {
		t.Fatalf("kill(%d, SIGUSR2): %v", p.Pid, err)
	}
	return p.Wait(t, CheckTimeout).ExitStatus()
}

// Wait reaps the process (which must be a child of the test process) without
// signalling it, failing the test on timeout.
func (p *Proc) Wait(t testing.TB, timeout time.Duration) unix.WaitStatus {
	t.Helper()
	ws, err := Reap(p.Pid, timeout)
	if err != nil {
		t.Fatalf("pid %d: %v; log:\n%s", p.Pid, err, p.LogText())
	}
	p.reaped = true
	return ws
}

// Kill sends SIGKILL and reaps the process if it is still there. If it is not
// a child of the test process, it waits for it to disappear instead.
func (p *Proc) Kill() {
	if p.reaped {
		return
	}
	unix.Kill(p.Pid, unix.SIGKILL)
	_, err := Reap(p.Pid, KillTimeout)
	if err != nil {
		// Not our child (or already reaped elsewhere): wait until it is gone.
		for deadline := time.Now().Add(KillTimeout); time.Now().Before(deadline); {
			if _, _, _, err := procStat(p.Pid); err != nil {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	p.reaped = true
}

// HexInfo returns READY value key parsed as a number (0x prefix for hex).
func (p *Proc) HexInfo(t testing.TB, key string) uint64 {
	t.Helper()
	v, ok := p.Info[key]
	if !ok {
		t.Fatalf("pid %d: READY line has no %q (info %v)", p.Pid, key, p.Info)
	}
	n, err := strconv.ParseUint(v, 0, 64)
	if err != nil {
		t.Fatalf("pid %d: READY %s=%q: %v", p.Pid, key, v, err)
	}
	return n
}

// IntInfo returns READY value key as an int (decimal, or 0x/0 prefixed).
func (p *Proc) IntInfo(t testing.TB, key string) int {
	t.Helper()
	return int(p.HexInfo(t, key))
}

// IntsInfo returns a comma-separated READY value (e.g. touched=0,17,1000).
func (p *Proc) IntsInfo(t testing.TB, key string) []int {
	t.Helper()
	v, ok := p.Info[key]
	if !ok {
		t.Fatalf("pid %d: READY line has no %q (info %v)", p.Pid, key, p.Info)
	}
	var out []int
	for _, s := range strings.Split(v, ",") {
		n, err := strconv.ParseInt(s, 0, 64)
		if err != nil {
			t.Fatalf("pid %d: READY %s=%q: %v", p.Pid, key, v, err)
		}
		out = append(out, int(n))
	}
	return out
}
