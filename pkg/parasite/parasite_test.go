package parasite_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cr-tools/cr/pkg/parasite"
	"github.com/cr-tools/cr/pkg/ptrace"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func vdso(t *testing.T, pid int) (uintptr, uintptr) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	require.NoError(t, err)
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if strings.HasSuffix(s.Text(), "[vdso]") {
			var a, b uintptr
			fmt.Sscanf(s.Text(), "%x-%x", &a, &b)
			return a, b
		}
	}
	t.Fatal("no vdso")
	return 0, 0
}

// TestInjectGetpid injects getpid into a sleeping process and checks that
// the process keeps running untouched afterwards.
func TestInjectGetpid(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	cmd := exec.Command("sleep", "1000")
	require.NoError(t, cmd.Start())
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	time.Sleep(50 * time.Millisecond)
	pid := cmd.Process.Pid

	tr := ptrace.NewTracer()
	defer tr.Close()
	task, err := tr.Seize(pid, unix.PTRACE_O_SUSPEND_SECCOMP)
	require.NoError(t, err)
	lo, hi := vdso(t, pid)
	code := make([]byte, hi-lo)
	require.NoError(t, ptrace.Read(pid, lo, code))
	addr, ok := parasite.FindSyscall(code, lo)
	require.True(t, ok)

	in, err := parasite.New(task, addr)
	require.NoError(t, err)
	before := *in.Saved()
	start := time.Now()
	const n = 1000
	for i := 0; i < n; i++ {
		r, err := in.Syscall(unix.SYS_GETPID)
		require.NoError(t, err)
		require.Equal(t, uintptr(pid), r)
	}
	t.Logf("%v per injected syscall", time.Since(start)/n)
	_, err = in.Syscall(unix.SYS_CLOSE, 12345)
	require.ErrorIs(t, err, unix.EBADF)
	require.NoError(t, in.Release())
	after, err := task.GetRegs()
	require.NoError(t, err)
	require.Equal(t, before, *after)
	require.NoError(t, task.Detach(0))
	time.Sleep(20 * time.Millisecond)
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	require.NoError(t, err)
	require.Contains(t, string(st), ") S ")
}
