package dump

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/procfs"
	"github.com/cr-tools/cr/pkg/ptrace"
	"golang.org/x/sys/unix"
)

// sigev_notify values (asm-generic/siginfo.h).
const (
	sigevSignal   = 0
	sigevNone     = 1
	sigevThread   = 2
	sigevThreadID = 4
)

// pendingSignals reads the thread's (or, with shared, the process's) queue
// of pending signals without dequeuing them.
func pendingSignals(task *ptrace.Task, shared bool) ([][]byte, error) {
	var out [][]byte
	buf := make([]ptrace.Siginfo, 32)
	for {
		n, err := task.PeekSiginfo(len(out), shared, buf)
		if err != nil {
			return nil, err
		}
		for _, si := range buf[:n] {
			out = append(out, append([]byte(nil), si[:]...))
		}
		if n < len(buf) {
			return out, nil
		}
	}
}

// posixTimers parses /proc/PID/timers (fs/proc/base.c, show_timer); values
// are filled in later by injected timer_gettime calls.
func posixTimers(pid int) ([]image.PosixTimer, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/timers", pid))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var out []image.PosixTimer
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		k, v, _ := strings.Cut(s.Text(), ":")
		v = strings.TrimSpace(v)
		switch k {
		case "ID":
			id, _ := strconv.Atoi(v)
			out = append(out, image.PosixTimer{ID: int32(id)})
		case "signal":
			if len(out) == 0 {
				continue
			}
			sig, val, _ := strings.Cut(v, "/")
			n, _ := strconv.Atoi(sig)
			x, _ := strconv.ParseUint(val, 16, 64)
			out[len(out)-1].Signo, out[len(out)-1].SigevValue = int32(n), x
		case "notify":
			if len(out) == 0 {
				continue
			}
			how, who, _ := strings.Cut(v, "/")
			t := &out[len(out)-1]
			switch how {
			case "signal":
				t.Notify = sigevSignal
			case "none":
				t.Notify = sigevNone
			case "thread":
				t.Notify = sigevThread
			}
			if kind, id, ok := strings.Cut(who, "."); ok && kind == "tid" {
				t.Notify |= sigevThreadID
				n, _ := strconv.Atoi(id)
				t.NotifyTid = int32(n)
			}
		case "ClockID":
			if len(out) > 0 {
				n, _ := strconv.Atoi(v)
				out[len(out)-1].Clock = int32(n)
			}
		}
	}
	return out, s.Err()
}

// seccomp reads the seccomp mode and filters (oldest first).
func (d *dumper) seccomp(task *ptrace.Task, status *procfs.Status) (*image.Seccomp, error) {
	mode := int(status.Int("Seccomp"))
	if mode == 0 {
		return nil, nil
	}
	sc := &image.Seccomp{Mode: mode}
	if mode != 2 {
		return sc, nil
	}
	for i := 0; ; i++ {
		prog, err := task.SeccompFilter(i)
		if errors.Is(err, unix.ENOENT) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read seccomp filter %d: %w", i, err)
		}
		flags, err := task.SeccompFlags(i)
		if err != nil {
			return nil, fmt.Errorf("read seccomp filter %d flags: %w", i, err)
		}
		sc.Filters = append([]image.SeccompFilter{{Flags: flags, Insns: prog}}, sc.Filters...)
	}
	return sc, nil
}

// fixRseq does what the kernel does when it preempts a thread inside an
// rseq critical section (kernel/rseq.c, rseq_ip_fixup): rip moves to the
// section's abort handler and rseq_cs is cleared. It runs right after the
// seize, before any syscall is injected: returning from an injected syscall
// with rip outside the section makes the kernel clear rseq_cs, after which
// the thread would run on inside the section unaborted. The live thread and
// the image both get the fixed-up state.
func (d *dumper) fixRseq(t *thread) error {
	conf, err := t.task.GetRseqConfig()
	if err != nil || conf.Ptr == 0 {
		return err
	}
	var cs [8]byte // struct rseq: cpu_id_start u32, cpu_id u32, rseq_cs u64
	if err := ptrace.Read(d.pid, uintptr(conf.Ptr+8), cs[:]); err != nil {
		return fmt.Errorf("read rseq area: %w", err)
	}
	ptr := binary.LittleEndian.Uint64(cs[:])
	if ptr == 0 {
		return nil
	}
	var desc [32]byte // struct rseq_cs: version, flags, start_ip, post_commit_offset, abort_ip
	if err := ptrace.Read(d.pid, uintptr(ptr), desc[:]); err != nil {
		return fmt.Errorf("read rseq_cs: %w", err)
	}
	start := binary.LittleEndian.Uint64(desc[8:])
	length := binary.LittleEndian.Uint64(desc[16:])
	abort := binary.LittleEndian.Uint64(desc[24:])
	regs, err := t.task.GetRegs()
	if err != nil {
		return err
	}
	if regs.Rip < start || regs.Rip-start >= length {
		return nil
	}
	d.logf("thread %d is inside an rseq critical section: it resumes at the abort handler %#x", t.task.Pid, abort)
	if err := ptrace.Write(d.pid, uintptr(conf.Ptr+8), make([]byte, 8)); err != nil {
		return err
	}
	regs.Rip = abort
	return t.task.SetRegs(regs)
}
