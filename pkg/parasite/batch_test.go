package parasite_test

import (
	"bytes"
	"encoding/binary"
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

// victim is a seized `sleep 1000` with an injector on it.
type victim struct {
	pid  int
	cmd  *exec.Cmd
	tr   *ptrace.Tracer
	task *ptrace.Task
	in   *parasite.Injector
}

func startVictim(tb testing.TB) *victim {
	if os.Getuid() != 0 {
		tb.Skip("needs root")
	}
	cmd := exec.Command("sleep", "1000")
	require.NoError(tb, cmd.Start())
	v := &victim{pid: cmd.Process.Pid, cmd: cmd, tr: ptrace.NewTracer()}
	tb.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); v.tr.Close() })
	time.Sleep(50 * time.Millisecond)
	var err error
	v.task, err = v.tr.Seize(v.pid, unix.PTRACE_O_SUSPEND_SECCOMP)
	require.NoError(tb, err)
	lo, hi := vdsoRange(tb, v.pid)
	code := make([]byte, hi-lo)
	require.NoError(tb, ptrace.Read(v.pid, lo, code))
	addr, ok := parasite.FindSyscall(code, lo)
	require.True(tb, ok)
	v.in, err = parasite.New(v.task, addr)
	require.NoError(tb, err)
	return v
}

func vdsoRange(tb testing.TB, pid int) (uintptr, uintptr) {
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	require.NoError(tb, err)
	for _, l := range strings.Split(string(maps), "\n") {
		if strings.HasSuffix(l, "[vdso]") {
			var a, b uintptr
			fmt.Sscanf(l, "%x-%x", &a, &b)
			return a, b
		}
	}
	tb.Fatal("no vdso")
	return 0, 0
}

// mmap maps anonymous private memory in the victim.
func (v *victim) mmap(tb testing.TB, size uintptr, prot int) uintptr {
	r, err := v.in.Syscall(unix.SYS_MMAP, 0, size, uintptr(prot), unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uintptr(0), 0)
	require.NoError(tb, err)
	return r
}

// batchPages maps a code page holding BatchCode and tableSize bytes of table.
func (v *victim) batchPages(tb testing.TB, tableSize uintptr) (code, table uintptr) {
	code = v.mmap(tb, 4096, unix.PROT_READ|unix.PROT_EXEC)
	require.NoError(tb, parasite.PrepareBatchPage(v.pid, code))
	table = v.mmap(tb, tableSize, unix.PROT_READ|unix.PROT_WRITE)
	return code, table
}

// finish releases and detaches the victim, checks it got its registers back
// and is in state want (S: sleeping) afterwards.
func (v *victim) finish(tb testing.TB, want string) {
	before := *v.in.Saved()
	require.NoError(tb, v.in.Release())
	after, err := v.task.GetRegs()
	require.NoError(tb, err)
	require.Equal(tb, before, *after)
	mask, err := v.task.GetSigmask()
	require.NoError(tb, err)
	require.Equal(tb, v.in.SavedMask(), mask)
	require.NoError(tb, v.task.Detach(0))
	time.Sleep(20 * time.Millisecond)
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", v.pid))
	require.NoError(tb, err)
	require.Contains(tb, string(st), ") "+want+" ")
}

func TestBatchCodeDecodes(t *testing.T) {
	objdump, err := exec.LookPath("objdump")
	if err != nil {
		t.Skip("no objdump")
	}
	f := t.TempDir() + "/code.bin"
	require.NoError(t, os.WriteFile(f, parasite.BatchCode(), 0o644))
	out, err := exec.Command(objdump, "-D", "-b", "binary", "-m", "i386:x86-64", "-M", "intel", f).Output()
	require.NoError(t, err)
	var got []string
	for _, l := range strings.Split(string(out), "\n") {
		// "   0:	48 8b 03             	mov    rax,QWORD PTR [rbx]"
		if p := strings.Split(l, "\t"); len(p) == 3 && strings.HasSuffix(p[0], ":") {
			got = append(got, strings.TrimSpace(p[0])+" "+strings.Join(strings.Fields(p[2]), " "))
		}
	}
	want := []string{
		"0: mov rax,QWORD PTR [rbx]",
		"3: cmp rax,0xffffffffffffffff",
		"7: je 0x2d",
		"9: mov rdi,QWORD PTR [rbx+0x8]",
		"d: mov rsi,QWORD PTR [rbx+0x10]",
		"11: mov rdx,QWORD PTR [rbx+0x18]",
		"15: mov r10,QWORD PTR [rbx+0x20]",
		"19: mov r8,QWORD PTR [rbx+0x28]",
		"1d: mov r9,QWORD PTR [rbx+0x30]",
		"21: syscall",
		"23: mov QWORD PTR [rbx+0x38],rax",
		"27: add rbx,0x40",
		"2b: jmp 0x0",
		"2d: int3",
	}
	require.Equal(t, want, got)
}

// TestBatch runs 100 mixed syscalls in one batch and compares them with the
// same syscalls injected one by one.
func TestBatch(t *testing.T) {
	v := startVictim(t)
	const n = 100
	tableSize := uintptr(parasite.BatchTableSize(n))
	code, table := v.batchPages(t, tableSize+4096)
	out := table + tableSize // rt_sigaction results, 32 bytes per call
	ppid := os.Getpid()

	var calls []parasite.Call
	var want []parasite.Result
	sig := 0
	for i := 0; i < n; i++ {
		switch i % 4 {
		case 0:
			calls = append(calls, parasite.Call{Nr: unix.SYS_GETPID})
			want = append(want, parasite.Result{Nr: unix.SYS_GETPID, Val: uintptr(v.pid)})
		case 1:
			calls = append(calls, parasite.Call{Nr: unix.SYS_GETPPID})
			want = append(want, parasite.Result{Nr: unix.SYS_GETPPID, Val: uintptr(ppid)})
		case 2:
			sig++
			if sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) {
				sig++
			}
			calls = append(calls, parasite.Call{Nr: unix.SYS_RT_SIGACTION, Args: [6]uintptr{uintptr(sig), 0, out + uintptr(32*(i/4)), 8}})
			want = append(want, parasite.Result{Nr: unix.SYS_RT_SIGACTION})
		case 3:
			calls = append(calls, parasite.Call{Nr: unix.SYS_CLOSE, Args: [6]uintptr{12345}})
			want = append(want, parasite.Result{Nr: unix.SYS_CLOSE, Errno: unix.EBADF})
		}
	}
	// Fill the sigaction slots with junk, so the check below sees them written.
	junk := bytes.Repeat([]byte{0xa5}, 4096)
	require.NoError(t, ptrace.Write(v.pid, out, junk))

	count := v.in.Count
	start := time.Now()
	res, err := v.in.Batch(code, table, calls)
	batch := time.Since(start)
	require.NoError(t, err)
	require.Equal(t, want, res)
	require.Equal(t, count+n, v.in.Count)
	require.ErrorIs(t, res[3].Err(), unix.EBADF)
	require.NoError(t, res[0].Err())

	got := make([]byte, 32*n/4)
	require.NoError(t, ptrace.Read(v.pid, out, got))

	// The same one by one; the sigaction results must match.
	start = time.Now()
	for i, c := range calls {
		if c.Nr == unix.SYS_RT_SIGACTION {
			c.Args[2] = out + 4096 - 32
		}
		r, err := v.in.Syscall(c.Nr, c.Args[:]...)
		if want[i].Errno != 0 {
			require.ErrorIs(t, err, want[i].Errno)
		} else {
			require.NoError(t, err)
			require.Equal(t, want[i].Val, r)
		}
		if c.Nr == unix.SYS_RT_SIGACTION {
			one := make([]byte, 32)
			require.NoError(t, ptrace.Read(v.pid, out+4096-32, one))
			require.Equal(t, one, got[32*(i/4):32*(i/4)+32], "sigaction of signal %d", c.Args[0])
		}
	}
	single := time.Since(start)
	t.Logf("%d syscalls: batch %v (%.2fµs per syscall), one by one %v (%.1fµs per syscall, with a sigaction readback each 4th)",
		n, batch, float64(batch.Nanoseconds())/1e3/n, single, float64(single.Nanoseconds())/1e3/n)

	// Several batches from the same pages.
	for j := 0; j < 3; j++ {
		res, err := v.in.Batch(code, table, calls[:1+j*30])
		require.NoError(t, err)
		require.Equal(t, want[:1+j*30], res)
	}
	_, err = v.in.Syscall(unix.SYS_MUNMAP, code, 4096)
	require.NoError(t, err)
	_, err = v.in.Syscall(unix.SYS_MUNMAP, table, tableSize+4096)
	require.NoError(t, err)
	v.finish(t, "S")
}

// TestBatchRefuses checks the argument checks made before anything runs.
func TestBatchRefuses(t *testing.T) {
	v := startVictim(t)
	code, table := v.batchPages(t, 4096)
	_, err := v.in.Batch(code, table, []parasite.Call{{Nr: unix.SYS_GETPID}, {Nr: unix.SYS_CLONE}})
	require.ErrorContains(t, err, "cannot be batched")
	_, err = v.in.Batch(table, table, []parasite.Call{{Nr: unix.SYS_GETPID}})
	require.ErrorContains(t, err, "no batch code")
	// A read-only table: process_vm_writev refuses it.
	_, err = v.in.Syscall(unix.SYS_MPROTECT, table, 4096, unix.PROT_READ)
	require.NoError(t, err)
	_, err = v.in.Batch(code, table, []parasite.Call{{Nr: unix.SYS_GETPID}})
	require.ErrorIs(t, err, unix.EFAULT)
	require.Equal(t, 0, countTraps(t, v))
	v.finish(t, "S")
}

func countTraps(tb testing.TB, v *victim) int {
	n, err := v.task.PeekSiginfo(0, false, make([]ptrace.Siginfo, 4))
	require.NoError(tb, err)
	return n
}

// TestBatchFault runs the batch code from a page that is not executable:
// the SIGSEGV must come back as a *ptrace.StopError and never reach the task.
func TestBatchFault(t *testing.T) {
	v := startVictim(t)
	_, table := v.batchPages(t, 8192)
	code := table + 4096
	require.NoError(t, parasite.PrepareBatchPage(v.pid, code))
	res, err := v.in.Batch(code, table, []parasite.Call{{Nr: unix.SYS_GETPID}})
	var se *ptrace.StopError
	require.ErrorAs(t, err, &se)
	require.Equal(t, unix.SIGSEGV, se.Sig)
	require.Empty(t, res)
	// The injector still works.
	r, err := v.in.Syscall(unix.SYS_GETPID)
	require.NoError(t, err)
	require.Equal(t, uintptr(v.pid), r)
	v.finish(t, "S")
}

// TestBatchKilled kills the task while a batch blocks in pause().
func TestBatchKilled(t *testing.T) {
	v := startVictim(t)
	code, table := v.batchPages(t, 4096)
	go func() {
		time.Sleep(50 * time.Millisecond)
		unix.Kill(v.pid, unix.SIGKILL)
	}()
	res, err := v.in.Batch(code, table, []parasite.Call{{Nr: unix.SYS_GETPID}, {Nr: unix.SYS_PAUSE}})
	var ex *ptrace.ExitedError
	require.ErrorAs(t, err, &ex)
	require.True(t, ex.Status.Signaled())
	require.Equal(t, unix.SIGKILL, ex.Status.Signal())
	require.Nil(t, res)
	require.NotNil(t, v.task.Exited)
}

// TestBatchTimeout: a batch that blocks is stopped when the wait times out,
// and the task is left in a stop we can undo.
func TestBatchTimeout(t *testing.T) {
	v := startVictim(t)
	code, table := v.batchPages(t, 4096)
	v.task.Timeout = 100 * time.Millisecond
	res, err := v.in.Batch(code, table, []parasite.Call{{Nr: unix.SYS_GETPID}, {Nr: unix.SYS_PAUSE}, {Nr: unix.SYS_GETPID}})
	require.ErrorIs(t, err, ptrace.ErrTimeout)
	require.Equal(t, []parasite.Result{{Nr: unix.SYS_GETPID, Val: uintptr(v.pid)}}, res)
	v.task.Timeout = 0
	r, err := v.in.Syscall(unix.SYS_GETPID)
	require.NoError(t, err)
	require.Equal(t, uintptr(v.pid), r)
	v.finish(t, "S")
}

// TestBatchStopSignal sends SIGSTOP while a batch blocks in read(): the batch
// goes on, and the process is stopped once detached.
func TestBatchStopSignal(t *testing.T) {
	v := startVictim(t)
	code, table := v.batchPages(t, 4096)
	_, err := v.in.Syscall(unix.SYS_PIPE2, table+2048, 0)
	require.NoError(t, err)
	fds := make([]byte, 8)
	require.NoError(t, ptrace.Read(v.pid, table+2048, fds))
	rfd := uintptr(binary.LittleEndian.Uint32(fds))
	wfd := uintptr(binary.LittleEndian.Uint32(fds[4:]))

	go func() {
		time.Sleep(50 * time.Millisecond)
		unix.Tgkill(v.pid, v.pid, unix.SIGSTOP)
		time.Sleep(50 * time.Millisecond)
		f, err := os.OpenFile(fmt.Sprintf("/proc/%d/fd/%d", v.pid, wfd), os.O_WRONLY, 0)
		if err == nil {
			f.Write([]byte{'x'})
			f.Close()
		}
	}()
	res, err := v.in.Batch(code, table, []parasite.Call{
		{Nr: unix.SYS_READ, Args: [6]uintptr{rfd, table + 3000, 1}},
		{Nr: unix.SYS_CLOSE, Args: [6]uintptr{rfd}},
		{Nr: unix.SYS_CLOSE, Args: [6]uintptr{wfd}},
	})
	require.NoError(t, err)
	require.Equal(t, []parasite.Result{{Nr: unix.SYS_READ, Val: 1}, {Nr: unix.SYS_CLOSE}, {Nr: unix.SYS_CLOSE}}, res)
	v.finish(t, "T")
	require.NoError(t, unix.Kill(v.pid, unix.SIGCONT))
	time.Sleep(20 * time.Millisecond)
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", v.pid))
	require.NoError(t, err)
	require.Contains(t, string(st), ") S ")
}

func benchSetup(b *testing.B) (*victim, uintptr, uintptr) {
	v := startVictim(b)
	code, table := v.batchPages(b, 1<<16)
	b.Cleanup(func() {
		if err := v.in.Release(); err == nil {
			v.task.Detach(0)
		}
	})
	return v, code, table
}

// BenchmarkInjectSingle: ns per getpid injected with Syscall.
func BenchmarkInjectSingle(b *testing.B) {
	v, _, _ := benchSetup(b)
	for b.Loop() {
		if _, err := v.in.Syscall(unix.SYS_GETPID); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkInjectBatch: ns per getpid injected in batches of 100.
func BenchmarkInjectBatch(b *testing.B) {
	v, code, table := benchSetup(b)
	calls := make([]parasite.Call, 100)
	for i := range calls {
		calls[i].Nr = unix.SYS_GETPID
	}
	n := 0
	for b.Loop() {
		if _, err := v.in.Batch(code, table, calls); err != nil {
			b.Fatal(err)
		}
		n += len(calls)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/syscall")
}
