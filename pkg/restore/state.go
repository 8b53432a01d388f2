package restore

import (
	"encoding/binary"
	"fmt"

	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// Constants not in x/sys/unix.
const (
	prTimerCreateRestoreIDs = 77 // PR_TIMER_CREATE_RESTORE_IDS (Linux 6.14)
	secbitKeepCaps          = 1 << 4
	secbitNoroot            = 1 << 0
	capLastCap              = 40
	sysSetRobustList        = unix.SYS_SET_ROBUST_LIST
	seccompSetModeFilter    = 1
)

func le64(vals ...uint64) []byte {
	b := make([]byte, 0, 8*len(vals))
	for _, v := range vals {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	return b
}

// restoreSigactions sets the disposition of every signal but SIGKILL and
// SIGSTOP, SIG_DFL ones included: the task does not start with defaults,
// it inherits every ignored signal of cr (execve(2) resets only handlers),
// e.g. SIGINT and SIGQUIT ignored by a shell for a background job, or
// SIGHUP by nohup.
func (r *restorer) restoreSigactions() error {
	img := map[int]image.Sigaction{}
	for _, sa := range r.proc.Task.Sigactions {
		img[sa.Sig] = sa
	}
	for sig := 1; sig <= 64; sig++ {
		if sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) {
			continue
		}
		sa := img[sig] // absent: SIG_DFL
		addr, err := r.stash(le64(sa.Handler, sa.Flags, sa.Restorer, sa.Mask))
		if err != nil {
			return err
		}
		r.queue(fmt.Sprintf("restore the disposition of signal %d", sig), unix.SYS_RT_SIGACTION, uintptr(sig), addr, 0, 8)
	}
	return nil
}

// restoreThreadSignals sets a thread's alternate stack and queues its
// pending signals, from the thread itself (the kernel allows a kernel
// si_code only when a thread queues to itself); handlers are in place and
// every signal is blocked meanwhile.
func (r *restorer) restoreThreadSignals(th *image.Thread) error {
	if ss := th.Sigaltstack; ss != nil {
		addr, err := r.stash(le64(ss.SP, uint64(uint32(ss.Flags)), ss.Size))
		if err != nil {
			return err
		}
		r.queue("sigaltstack", unix.SYS_SIGALTSTACK, addr, 0)
	}
	for _, si := range th.Pending {
		sig := binary.LittleEndian.Uint32(si)
		addr, err := r.stash(si)
		if err != nil {
			return err
		}
		r.queue(fmt.Sprintf("queue pending signal %d", sig), unix.SYS_RT_TGSIGQUEUEINFO, uintptr(r.proc.Task.Pid), uintptr(th.Tid), uintptr(sig), addr)
	}
	return nil
}

// restoreSharedSignals queues the process-wide pending signals, from the
// main thread.
func (r *restorer) restoreSharedSignals() error {
	pid := uintptr(r.proc.Task.Pid)
	for _, si := range r.proc.Task.SharedPending {
		sig := binary.LittleEndian.Uint32(si)
		addr, err := r.stash(si)
		if err != nil {
			return err
		}
		r.queue(fmt.Sprintf("queue pending signal %d", sig), unix.SYS_RT_SIGQUEUEINFO, pid, uintptr(sig), addr)
	}
	return nil
}

// restoreTimers re-arms interval timers and POSIX timers (same ids).
func (r *restorer) restoreTimers() error {
	t := &r.proc.Task
	for _, it := range t.Itimers {
		if it.ValueUs == 0 && it.IntervalUs != 0 {
			// It expired while the process was frozen: the kernel reloads an
			// expired periodic timer only when its signal is dequeued, and a
			// zero value would disarm it. Start the next period now.
			it.ValueUs = it.IntervalUs
		}
		b := le64(uint64(it.IntervalUs/1e6), uint64(it.IntervalUs%1e6), uint64(it.ValueUs/1e6), uint64(it.ValueUs%1e6))
		addr, err := r.put(0, b)
		if err != nil {
			return err
		}
		if _, err := r.sys(unix.SYS_SETITIMER, uintptr(it.Which), addr, 0); err != nil {
			return fmt.Errorf("setitimer %d: %w", it.Which, err)
		}
	}
	if len(t.PosixTimers) == 0 {
		return nil
	}
	if _, err := r.sys(unix.SYS_PRCTL, prTimerCreateRestoreIDs, 1); err != nil {
		return fmt.Errorf("PR_TIMER_CREATE_RESTORE_IDS (needs Linux 6.14): %w", err)
	}
	// /proc/PID/timers lists the newest timer first: create them oldest first
	// so that the list reads the same.
	for i := len(t.PosixTimers) - 1; i >= 0; i-- {
		pt := t.PosixTimers[i]
		// struct sigevent: value(8) signo(4) notify(4) tid(4) ... (64 bytes)
		ev := make([]byte, 64)
		binary.LittleEndian.PutUint64(ev[0:], pt.SigevValue)
		binary.LittleEndian.PutUint32(ev[8:], uint32(pt.Signo))
		binary.LittleEndian.PutUint32(ev[12:], uint32(pt.Notify))
		binary.LittleEndian.PutUint32(ev[16:], uint32(pt.NotifyTid))
		evAddr, err := r.put(0, ev)
		if err != nil {
			return err
		}
		id := make([]byte, 4)
		binary.LittleEndian.PutUint32(id, uint32(pt.ID))
		idAddr, err := r.put(128, id)
		if err != nil {
			return err
		}
		if _, err := r.sys(unix.SYS_TIMER_CREATE, uintptr(pt.Clock), evAddr, idAddr); err != nil {
			return fmt.Errorf("timer_create id %d: %w", pt.ID, err)
		}
		got := make([]byte, 4)
		if _, err := r.mem.ReadAt(got, int64(idAddr)); err != nil {
			return err
		}
		if int32(binary.LittleEndian.Uint32(got)) != pt.ID {
			return fmt.Errorf("timer_create gave id %d, wanted %d", int32(binary.LittleEndian.Uint32(got)), pt.ID)
		}
		if pt.ValueNs == 0 && pt.IntervalNs != 0 {
			pt.ValueNs = pt.IntervalNs // expired while frozen; see the itimers above
		}
		if pt.ValueNs == 0 {
			continue
		}
		its := le64(uint64(pt.IntervalNs/1e9), uint64(pt.IntervalNs%1e9), uint64(pt.ValueNs/1e9), uint64(pt.ValueNs%1e9))
		itsAddr, err := r.put(256, its)
		if err != nil {
			return err
		}
		if _, err := r.sys(unix.SYS_TIMER_SETTIME, uintptr(pt.ID), 0, itsAddr, 0); err != nil {
			return fmt.Errorf("timer_settime id %d: %w", pt.ID, err)
		}
	}
	if _, err := r.sys(unix.SYS_PRCTL, prTimerCreateRestoreIDs, 0); err != nil {
		return fmt.Errorf("PR_TIMER_CREATE_RESTORE_IDS off: %w", err)
	}
	return nil
}

// restoreMisc sets the per-task knobs that need no privilege.
func (r *restorer) restoreMisc() error {
	t := &r.proc.Task
	r.queue(fmt.Sprintf("personality %#x", t.Personality), unix.SYS_PERSONALITY, uintptr(t.Personality))
	if t.ChildSubreaper {
		r.queue("child subreaper", unix.SYS_PRCTL, unix.PR_SET_CHILD_SUBREAPER, 1)
	}
	pid := r.task.Pid
	if t.Sched.Policy != 0 || t.Sched.RtPriority != 0 {
		attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: uint32(t.Sched.Policy), Priority: uint32(t.Sched.RtPriority), Nice: int32(t.Sched.Nice)}
		if err := unix.SchedSetAttr(pid, &attr, 0); err != nil {
			return fmt.Errorf("scheduling policy %d: %w", t.Sched.Policy, err)
		}
	} else if err := unix.Setpriority(unix.PRIO_PROCESS, pid, t.Sched.Nice); err != nil {
		return fmt.Errorf("nice %d: %w", t.Sched.Nice, err)
	}
	return nil
}

// restoreSeccomp installs the filters, oldest first (ptrace's
// PTRACE_O_SUSPEND_SECCOMP keeps them from filtering our own injections).
func (r *restorer) restoreSeccomp() error {
	sc := r.proc.Task.Seccomp
	if sc == nil {
		return nil
	}
	if sc.Mode == 1 {
		return nil // strict mode is entered last, in finish
	}
	for i, f := range sc.Filters {
		insns, err := r.stash(f.Insns)
		if err != nil {
			return err
		}
		// struct sock_fprog { unsigned short len; struct sock_filter *filter; }
		prog, err := r.stash(le64(uint64(len(f.Insns)/8), uint64(insns)))
		if err != nil {
			return err
		}
		r.queue(fmt.Sprintf("install seccomp filter %d", i), unix.SYS_SECCOMP, seccompSetModeFilter, uintptr(f.Flags), prog)
	}
	return nil
}

// restoreLate sets what credential changes would reset: dumpable, the
// parent-death signal, no_new_privs.
func (r *restorer) restoreLate() error {
	t := &r.proc.Task
	if t.Dumpable == 0 || t.Dumpable == 1 { // 2 (suid_dumpable) cannot be set
		r.queue(fmt.Sprintf("dumpable %d", t.Dumpable), unix.SYS_PRCTL, unix.PR_SET_DUMPABLE, uintptr(t.Dumpable))
	}
	if t.Pdeathsig != 0 {
		r.queue("parent-death signal", unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, uintptr(t.Pdeathsig))
	}
	if t.NoNewPrivs {
		r.queue("no_new_privs", unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
	}
	return nil
}
