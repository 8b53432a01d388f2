package restore

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/cr-tools/cr/pkg/ptrace"
	"golang.org/x/sys/unix"
)

// errRestartBlock is ERESTART_RESTARTBLOCK (include/linux/errno.h): the
// syscall was interrupted and restarts through restart_syscall(2), which
// calls the function the syscall left in the thread's restart_block.
const errRestartBlock = 516

// Syscalls that keep their state in the restart block when interrupted
// (kernel/time/hrtimer.c hrtimer_nanosleep, kernel/time/posix-cpu-timers.c,
// fs/select.c do_sys_poll, kernel/futex/waitwake.c futex_wait), and where
// their timespec argument is (-1: none to replace).
var restartBlockCalls = map[int64]struct {
	name     string
	req, rem int // argument index of the request and of rem, -1 for none
}{
	unix.SYS_NANOSLEEP:       {"nanosleep", 0, 1},
	unix.SYS_CLOCK_NANOSLEEP: {"clock_nanosleep", 2, 3},
	unix.SYS_POLL:            {"poll", -1, -1},
	unix.SYS_FUTEX:           {"futex", -1, -1},
}

// restartSleeps gives back the restart block of every thread that was
// interrupted in a sleep that returned -ERESTART_RESTARTBLOCK at the dump
// (nanosleep, relative clock_nanosleep, poll, futex waits with a timeout).
// The kernel keeps the sleep's state (its expiry, its rem pointer) in
// current->restart_block, which ptrace cannot read or write, so the image
// holds the registers that make the call return EINTR. Instead, the call
// is run again in the thread from the trampoline, with the time it had
// left (nanosleep, clock_nanosleep: what the kernel wrote to rem at the
// dump; with rem NULL the whole request) or its own arguments (poll, futex:
// their original timeout, or the same absolute deadline), and interrupted
// at once: the thread then holds the same kind of restart block, and its
// registers get the call's -ERESTART_RESTARTBLOCK and number back, so that
// on detach the kernel turns them into restart_syscall(2) at the thread's
// own syscall instruction, exactly as after any other interruption. If the
// call finished instead (a polled fd was ready, a futex word had changed,
// the time left ran out), the thread gets its result.
//
// It returns, per thread index, the registers that replace the image's
// (nil: keep the image's). It must run while the trampoline is mapped.
func (r *restorer) restartSleeps() ([]*ptrace.Regs, error) {
	var final []*ptrace.Regs
	for i, th := range r.threads {
		img := &r.proc.Threads[i]
		sc := img.Syscall
		if sc == nil || sc.Action != "eintr" || sc.Result != -errRestartBlock {
			continue
		}
		call, ok := restartBlockCalls[sc.Nr]
		if !ok {
			continue // e.g. restart_syscall itself: the first call is not known
		}
		regs := img.Regs.Ptrace()
		args := [6]uint64{regs.Rdi, regs.Rsi, regs.Rdx, regs.R10, regs.R8, regs.R9}
		left := time.Duration(-1)
		if call.req >= 0 {
			// The kernel wrote the time left to rem at the dump; without rem,
			// the whole request (never longer than the program asked for).
			from := args[call.req]
			if args[call.rem] != 0 {
				from = args[call.rem]
			}
			ts := make([]byte, 16)
			if _, err := r.mem.ReadAt(ts, int64(from)); err != nil {
				return nil, fmt.Errorf("thread %d in %s: read its timespec at %#x: %w", img.Tid, call.name, from, err)
			}
			sec, nsec := int64(binary.LittleEndian.Uint64(ts)), int64(binary.LittleEndian.Uint64(ts[8:]))
			if sec < 0 || nsec < 0 || nsec >= 1e9 {
				// Changed by the program since the call: let it see EINTR.
				r.logf("thread %d: %s returns EINTR: its timespec at %#x is invalid now (%d s %d ns)", img.Tid, call.name, from, sec, nsec)
				continue
			}
			left = time.Duration(sec)*time.Second + time.Duration(nsec)
			if err := r.flush(); err != nil {
				return nil, err
			}
			addr, err := r.put(0, ts)
			if err != nil {
				return nil, err
			}
			args[call.req] = uint64(addr)
		}
		out, err := r.interruptIn(th, uint64(sc.Nr), args)
		if err != nil {
			return nil, fmt.Errorf("thread %d: restart %s: %w", img.Tid, call.name, err)
		}
		// The registers the thread stopped in the syscall with, but at its
		// own instruction: rip is already just after it.
		regs.Rax, regs.Orig_rax = out.Rax, out.Orig_rax
		if out.Rip != uint64(r.tramp)+2 {
			regs.Orig_rax = ^uint64(0) // it ran on to the int3: a plain result
		}
		if final == nil {
			final = make([]*ptrace.Regs, len(r.threads))
		}
		final[i] = &regs
		if left >= 0 {
			r.logf("thread %d: %s goes on with %v left (result %d)", img.Tid, call.name, left, int64(out.Rax))
		} else {
			r.logf("thread %d: %s goes on (result %d)", img.Tid, call.name, int64(out.Rax))
		}
	}
	return final, nil
}

// interruptIn runs syscall nr with args in thread th from the trampoline's
// `syscall; int3` and interrupts it as soon as it has entered the kernel:
// stopped at the syscall entry (PTRACE_SYSCALL), the thread is sent a
// SIGTRAP, so that a sleep it then starts ends at once, as it did at the
// dump. It returns the registers at the stop that follows (normally the
// SIGTRAP's signal-delivery-stop just after the syscall instruction, rax
// holding the result); the SIGTRAP is discarded by the next resume.
func (r *restorer) interruptIn(th *rthread, nr uint64, args [6]uint64) (*ptrace.Regs, error) {
	cur, err := th.task.GetRegs()
	if err != nil {
		return nil, err
	}
	regs := *cur
	regs.Rip, regs.Rax, regs.Orig_rax = uint64(r.tramp), nr, ^uint64(0)
	regs.Rdi, regs.Rsi, regs.Rdx, regs.R10, regs.R8, regs.R9 = args[0], args[1], args[2], args[3], args[4], args[5]
	regs.Eflags &^= 0x100 | 0x400 // TF, DF
	if err := th.task.SetRegs(&regs); err != nil {
		return nil, err
	}
	entered := false
	for tries := 0; tries < 8 && !entered; tries++ {
		ws, err := th.task.ResumeAndWait(unix.PTRACE_SYSCALL, 0)
		if err != nil {
			return nil, err
		}
		if !ws.Stopped() {
			return nil, fmt.Errorf("unexpected status %#x", uint32(ws))
		}
		if uint32(ws)>>16 != 0 {
			continue // an event stop on the way: the syscall is still ahead
		}
		if ws.StopSignal()&0x7f != unix.SIGTRAP {
			return nil, fmt.Errorf("stopped by signal %v instead of at the syscall entry", ws.StopSignal())
		}
		at, err := th.task.GetRegs()
		if err != nil {
			return nil, err
		}
		if at.Rip != uint64(r.tramp)+2 || at.Orig_rax != nr {
			return nil, fmt.Errorf("stopped at %#x in syscall %d, not at the entry of syscall %d at %#x", at.Rip, int64(at.Orig_rax), nr, r.tramp)
		}
		entered = true
	}
	if !entered {
		return nil, fmt.Errorf("the syscall was not entered")
	}
	// The task was not seized (it is traced from birth), so PTRACE_INTERRUPT
	// is not available: a SIGTRAP, the one signal injection leaves
	// unblocked, does the same. It is taken at the stop that follows and
	// never delivered.
	if err := unix.Tgkill(r.proc.Task.Pid, th.task.Pid, unix.SIGTRAP); err != nil {
		return nil, fmt.Errorf("tgkill SIGTRAP: %w", err)
	}
	ws, err := th.task.ResumeAndWait(unix.PTRACE_CONT, 0)
	if err != nil {
		return nil, err
	}
	if !ws.Stopped() {
		return nil, fmt.Errorf("unexpected status %#x", uint32(ws))
	}
	out, err := th.task.GetRegs()
	if err != nil {
		return nil, err
	}
	if out.Rip != uint64(r.tramp)+2 && out.Rip != uint64(r.tramp)+3 {
		return nil, fmt.Errorf("stopped at %#x (status %#x), not after the syscall at %#x", out.Rip, uint32(ws), r.tramp)
	}
	return out, nil
}
