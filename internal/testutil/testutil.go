// Package testutil builds and runs the test fixtures in testdata/ (small C
// programs following a READY/OK line protocol, see testdata/fixture.h) and
// checks that tests leave no child processes or file descriptors behind.
package testutil

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Main is meant to be called from TestMain. It makes the test process a child
// subreaper (orphaned descendants, e.g. restored processes, are reparented to
// it), marks inherited fds >= 3 close-on-exec, runs the tests and then exits
// with status 1 if a child process is still alive or if file descriptors
// leaked.
func Main(m *testing.M) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintf(os.Stderr, "testutil: PR_SET_CHILD_SUBREAPER: %v\n", err)
	}
	markCloexec()
	// Opening a file initialises the runtime's netpoller (epoll/eventfd fds)
	// so that it does not show up as a leak.
	if f, err := os.Open(os.DevNull); err == nil {
		f.Close()
	}
	before := fdTable()

	code := m.Run()

	problems := leftoverChildren()
	problems = append(problems, leakedFDs(before)...)
	buildMu.Lock()
	if cacheDir != "" {
		os.RemoveAll(cacheDir)
	}
	buildMu.Unlock()
	for _, p := range problems {
		fmt.Fprintf(os.Stderr, "testutil: %s\n", p)
	}
	if len(problems) > 0 && code == 0 {
		fmt.Fprintln(os.Stderr, "FAIL (testutil: leftover processes or fds)")
		code = 1
	}
	os.Exit(code)
}

// markCloexec sets FD_CLOEXEC on every fd >= 3 (the environment hands
// processes stray fds that must not reach the fixtures).
func markCloexec() {
	if unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC) == nil {
		return
	}
	for fd := range fdTable() {
		if fd >= 3 {
			if fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
				unix.FcntlInt(uintptr(fd), unix.F_SETFD, fl|unix.FD_CLOEXEC)
			}
		}
	}
}

// fdTable maps each open fd of the test process to its /proc readlink.
func fdTable() map[int]string {
	self := fmt.Sprintf("/proc/%d/fd", os.Getpid())
	ents, _ := os.ReadDir("/proc/self/fd")
	m := make(map[int]string, len(ents))
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || target == self {
			continue // the directory fd used for this listing
		}
		m[fd] = target
	}
	return m
}

// leakedFDs reports fds that are open now but were not (or pointed
// elsewhere) when the snapshot before was taken.
func leakedFDs(before map[int]string) []string {
	// Let finalizers close files that are garbage (e.g. os.Process pidfds).
	for i := 0; i < 3; i++ {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	var out []string
	for fd, target := range fdTable() {
		if before[fd] == target {
			continue
		}
		if target == "anon_inode:[eventpoll]" || target == "anon_inode:[eventfd]" {
			continue // Go runtime netpoller
		}
		out = append(out, fmt.Sprintf("leaked fd %d -> %s", fd, target))
	}
	sort.Strings(out)
	return out
}

// procStat returns the state letter and parent pid from /proc/PID/stat.
func procStat(pid int) (state byte, ppid int, comm string, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, "", err
	}
	s := string(b)
	i, j := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if i < 0 || j < i {
		return 0, 0, "", fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	comm = s[i+1 : j]
	f := strings.Fields(s[j+1:])
	if len(f) < 2 {
		return 0, 0, "", fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	ppid, err = strconv.Atoi(f[1])
	return f[0][0], ppid, comm, err
}

// children lists the pids whose parent is the test process.
func children() []int {
	self := os.Getpid()
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, ppid, _, err := procStat(pid); err == nil && ppid == self {
			out = append(out, pid)
		}
	}
	return out
}

// leftoverChildren reaps zombie children and reports (then kills) children
// still alive after a short grace period.
func leftoverChildren() []string {
	deadline := time.Now().Add(2 * time.Second)
	for {
		var alive []int
		for _, pid := range children() {
			state, _, _, err := procStat(pid)
			if err != nil {
				continue
			}
			if state == 'Z' || state == 'X' {
				var ws unix.WaitStatus
				unix.Wait4(pid, &ws, unix.WNOHANG|unix.WALL, nil)
				continue
			}
			alive = append(alive, pid)
		}
		if len(alive) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			var out []string
			for _, pid := range alive {
				_, _, comm, _ := procStat(pid)
				out = append(out, fmt.Sprintf("child process %d (%s) still alive after the tests; killed", pid, comm))
				unix.Kill(pid, unix.SIGKILL)
				Reap(pid, 5*time.Second)
			}
			return out
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// RequireRoot skips the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("requires root (ptrace, restoring pids and credentials)")
	}
}

// RequireAVX512 skips the test unless the CPU has AVX-512F and AVX-512BW
// (needed by the spin_avx fixture).
func RequireAVX512(t testing.TB) {
	t.Helper()
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Skipf("cannot read /proc/cpuinfo: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "flags") {
			continue
		}
		f := " " + line + " "
		if strings.Contains(f, " avx512f ") && strings.Contains(f, " avx512bw ") {
			return
		}
		break
	}
	t.Skip("CPU lacks AVX-512F/BW")
}

var (
	rootOnce sync.Once
	rootDir  string
	rootErr  error

	buildMu  sync.Mutex
	cacheDir string                     // per test process, removed by Main
	built    = map[string]buildResult{} // cache key -> result
)

type buildResult struct {
	path string
	err  error
}

// ModuleRoot returns the directory containing go.mod, searching upwards from
// the working directory.
func ModuleRoot(t testing.TB) string {
	t.Helper()
	rootOnce.Do(func() {
		dir, err := os.Getwd()
		if err != nil {
			rootErr = err
			return
		}
		for {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				rootDir = dir
				return
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				rootErr = errors.New("go.mod not found above the working directory")
				return
			}
			dir = parent
		}
	})
	if rootErr != nil {
		t.Fatalf("testutil: %v", rootErr)
	}
	return rootDir
}

// TestdataDir returns the module's testdata directory.
func TestdataDir(t testing.TB) string {
	t.Helper()
	return filepath.Join(ModuleRoot(t), "testdata")
}

// build runs mk(outputPath) once per key and caches the result.
func build(t testing.TB, key, name string, mk func(out string) *exec.Cmd) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	r, ok := built[key]
	if !ok {
		r = func() buildResult {
			if cacheDir == "" {
				d, err := os.MkdirTemp("", "cr-testbin-")
				if err != nil {
					return buildResult{err: err}
				}
				cacheDir = d
			}
			sum := sha256.Sum256([]byte(key))
			out := filepath.Join(cacheDir, name+"-"+hex.EncodeToString(sum[:4]))
			cmd := mk(out)
			if b, err := cmd.CombinedOutput(); err != nil {
				return buildResult{err: fmt.Errorf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, b)}
			}
			return buildResult{path: out}
		}()
		built[key] = r
	}
	if r.err != nil {
		t.Fatalf("building %s: %v", name, r.err)
	}
	return r.path
}

// BuildC compiles testdata/<name>.c with gcc -O1 -g -Wall plus flags and
// returns the path of the binary (cached per test process). Skips the test if
// gcc is not installed.
func BuildC(t testing.TB, name string, flags ...string) string {
	t.Helper()
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("gcc not found")
	}
	src := filepath.Join(TestdataDir(t), name+".c")
	key := "c\x00" + name + "\x00" + strings.Join(flags, "\x00")
	return build(t, key, name, func(out string) *exec.Cmd {
		args := append([]string{"-O1", "-g", "-Wall"}, flags...)
		return exec.Command(gcc, append(args, "-o", out, src)...)
	})
}

// BuildGo builds the Go main package in dir (relative to the module root
// unless absolute, e.g. "testdata/gothreads") and returns the binary path.
func BuildGo(t testing.TB, dir string) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
		if _, err := os.Stat(goTool); err != nil {
			t.Skip("go tool not found")
		}
	}
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(ModuleRoot(t), dir)
	}
	return build(t, "go\x00"+dir, filepath.Base(dir), func(out string) *exec.Cmd {
		cmd := exec.Command(goTool, "build", "-o", out, ".")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		return cmd
	})
}

// Reap waits (WNOHANG polling, no blocking wait) until child pid has exited
// or timeout passes, and returns its wait status. Stop reports (e.g. ptrace
// stops) are skipped. The error is non-nil on timeout or if pid is not a
// child of the test process.
func Reap(pid int, timeout time.Duration) (unix.WaitStatus, error) {
	deadline := time.Now().Add(timeout)
	for {
		var ws unix.WaitStatus
		wpid, err := unix.Wait4(pid, &ws, unix.WNOHANG|unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return ws, fmt.Errorf("wait4(%d): %w", pid, err)
		}
		if wpid == pid && (ws.Exited() || ws.Signaled()) {
			return ws, nil
		}
		if time.Now().After(deadline) {
			return ws, fmt.Errorf("wait4(%d): timed out after %v", pid, timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
