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

// restoreCreds drops to the image's credentials: bounding set, securebits
// (keeping capabilities across the uid change), groups, gids, uids,
// capabilities, ambient set.
func (r *restorer) restoreCreds() error {
	c := &r.proc.Task.Creds
	ruid, euid, suid := unix.Getresuid()
	rgid, egid, sgid := unix.Getresgid()
	groups, _ := unix.Getgroups()
	var hdr = unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var own [2]unix.CapUserData
	if err := unix.Capget(&hdr, &own[0]); err != nil {
		return err
	}
	ownEff := uint64(own[0].Effective) | uint64(own[1].Effective)<<32
	ownPrm := uint64(own[0].Permitted) | uint64(own[1].Permitted)<<32
	same := c.Uid[0] == uint32(ruid) && c.Uid[1] == uint32(euid) && c.Uid[2] == uint32(suid) &&
		c.Gid[0] == uint32(rgid) && c.Gid[1] == uint32(egid) && c.Gid[2] == uint32(sgid) && len(groups) == len(c.Groups) &&
		c.CapEff == ownEff && c.CapPrm == ownPrm && c.CapAmb == 0 && c.Securebits == 0
	for i := 0; same && i < len(groups); i++ {
		same = uint32(groups[i]) == c.Groups[i]
	}
	if same {
		return r.restoreBounding(c)
	}
	if c.CapPrm&^ownPrm != 0 || c.CapBnd&^ownPrm != 0 && euid != 0 {
		return fmt.Errorf("the image holds capabilities %#x that cr does not have (%#x): restore it as root", c.CapPrm, ownPrm)
	}
	if euid != 0 && (c.Uid[1] != uint32(euid) || c.Uid[0] != uint32(ruid)) {
		return fmt.Errorf("the image's credentials (uid %d, gid %d) differ from cr's, and only root may restore another user's process", c.Uid[1], c.Gid[1])
	}
	if err := r.restoreBounding(c); err != nil {
		return err
	}
	r.queue(fmt.Sprintf("securebits %#x", c.Securebits), unix.SYS_PRCTL, unix.PR_SET_SECUREBITS, uintptr(c.Securebits|secbitKeepCaps))
	b := make([]byte, 0, 4*len(c.Groups)+4)
	for _, g := range c.Groups {
		b = binary.LittleEndian.AppendUint32(b, g)
	}
	addr, err := r.stash(append(b, 0, 0, 0, 0))
	if err != nil {
		return err
	}
	r.queue("setgroups", unix.SYS_SETGROUPS, uintptr(len(c.Groups)), addr)
	r.queue("setresgid", unix.SYS_SETRESGID, uintptr(c.Gid[0]), uintptr(c.Gid[1]), uintptr(c.Gid[2]))
	r.queue("setfsgid", unix.SYS_SETFSGID, uintptr(c.Gid[3]))
	r.queue("setresuid", unix.SYS_SETRESUID, uintptr(c.Uid[0]), uintptr(c.Uid[1]), uintptr(c.Uid[2]))
	r.queue("setfsuid", unix.SYS_SETFSUID, uintptr(c.Uid[3]))
	// struct __user_cap_header_struct, then two __user_cap_data_struct.
	capb := make([]byte, 0, 32)
	capb = binary.LittleEndian.AppendUint32(capb, unix.LINUX_CAPABILITY_VERSION_3)
	capb = binary.LittleEndian.AppendUint32(capb, 0)
	for _, half := range []int{0, 32} {
		for _, v := range []uint64{c.CapEff, c.CapPrm, c.CapInh} {
			capb = binary.LittleEndian.AppendUint32(capb, uint32(v>>half))
		}
	}
	addr, err = r.stash(capb)
	if err != nil {
		return err
	}
	r.queue("capset", unix.SYS_CAPSET, addr, addr+8)
	for cp := 0; cp <= capLastCap; cp++ {
		if c.CapAmb&(1<<cp) != 0 {
			r.queue(fmt.Sprintf("raise ambient capability %d", cp), unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, uintptr(cp), 0, 0)
		}
	}
	if c.Securebits&secbitKeepCaps == 0 {
		r.queue("clear keep-caps", unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 0)
	}
	return nil
}

func (r *restorer) restoreBounding(c *image.Creds) error {
	for cp := 0; cp <= capLastCap; cp++ {
		if c.CapBnd&(1<<cp) == 0 {
			r.queue(fmt.Sprintf("drop capability %d from the bounding set", cp), unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, uintptr(cp))
		}
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
