package dump

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cr-tools/cr/pkg/fdinfo"
	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/memdump"
	"github.com/cr-tools/cr/pkg/parasite"
	"github.com/cr-tools/cr/pkg/procfs"
	"github.com/cr-tools/cr/pkg/ptrace"
	"golang.org/x/sys/unix"
)

// Kernel-internal syscall return values (include/linux/errno.h).
const (
	errRestartSys    = 512
	errRestartNoIntr = 513
	errRestartNoHand = 514
	errRestartBlock  = 516
	ssDisable        = 2 // SS_DISABLE
	ssOnstack        = 1 // SS_ONSTACK
)

func (d *dumper) collect() error {
	pid := d.pid
	st, err := procfs.ReadStat(pid)
	if err != nil {
		return err
	}
	status, err := procfs.ReadStatus(pid)
	if err != nil {
		return err
	}
	if err := d.checkStatus(st, status); err != nil {
		return err
	}

	// Memory map and fds first: refusing is cheapest before any injection.
	maps, err := memdump.ReadSmaps(pid)
	if err != nil {
		return err
	}
	if d.proc.VMAs, err = memdump.VMAs(pid, maps); err != nil {
		return unsupported(pid, err)
	}
	fds, err := d.files.Add(pid)
	if err != nil {
		var te *fdinfo.TTYError
		if errors.As(err, &te) {
			return &ShellJobError{pid, fmt.Sprintf("has the terminal %s open at fd %d", te.Path, te.Fd)}
		}
		return unsupported(pid, err)
	}
	d.proc.Fds = fds
	if d.proc.FS, err = fdinfo.ReadFS(pid); err != nil {
		return unsupported(pid, err)
	}

	d.proc.Task = image.Task{
		Pid: pid, Ppid: st.Ppid, Pgid: st.Pgrp, Sid: st.Session, Comm: st.Comm,
		Umask: uint32(status.Int("Umask")), NoNewPrivs: status.Int("NoNewPrivs") == 1,
		Tty: st.TtyNr != 0, Stopped: d.stat.State == 'T' || d.stat.State == 't',
	}
	creds := &d.proc.Task.Creds
	copy(creds.Uid[:], status.Uint32s("Uid"))
	copy(creds.Gid[:], status.Uint32s("Gid"))
	creds.Groups = status.Uint32s("Groups")
	if creds.Groups == nil {
		creds.Groups = []uint32{}
	}
	creds.CapInh, creds.CapPrm, creds.CapEff = status.Hex("CapInh"), status.Hex("CapPrm"), status.Hex("CapEff")
	creds.CapBnd, creds.CapAmb = status.Hex("CapBnd"), status.Hex("CapAmb")
	if d.proc.Task.Seccomp, err = d.seccomp(d.threads[0].task, status); err != nil {
		return err
	}
	attr, err := unix.SchedGetAttr(pid, 0)
	if err != nil {
		return fmt.Errorf("sched_getattr of pid %d: %w", pid, err)
	}
	d.proc.Task.Sched = image.Sched{Policy: int(attr.Policy), Nice: int(attr.Nice), RtPriority: int(attr.Priority)}
	if d.proc.Task.PosixTimers, err = posixTimers(pid); err != nil {
		return err
	}

	// What only the task can tell.
	if err := d.startInjection(); err != nil {
		return err
	}
	if err := d.injectProcess(); err != nil {
		return err
	}
	for _, t := range d.threads {
		th, err := d.collectThread(t)
		if err != nil {
			return fmt.Errorf("thread %d: %w", t.task.Pid, err)
		}
		d.proc.Threads = append(d.proc.Threads, th)
	}
	if d.proc.Task.SharedPending, err = pendingSignals(d.threads[0].task, true); err != nil {
		return err
	}

	mm := &d.proc.MM
	mm.StartCode, mm.EndCode, mm.StartData, mm.EndData = st.StartCode, st.EndCode, st.StartData, st.EndData
	mm.StartBrk, mm.StartStack = st.StartBrk, st.StartStack
	mm.ArgStart, mm.ArgEnd, mm.EnvStart, mm.EnvEnd = st.ArgStart, st.ArgEnd, st.EnvStart, st.EnvEnd
	if mm.Auxv, err = procfs.ReadAuxv(pid); err != nil {
		return err
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return fmt.Errorf("exe of pid %d: %w", pid, err)
	}
	if strings.HasSuffix(exe, " (deleted)") {
		return &UnsupportedError{pid, "the executable " + exe + " was deleted"}
	}
	if mm.Exe, err = memdump.Identify(fmt.Sprintf("/proc/%d/exe", pid), exe); err != nil {
		return err
	}
	return nil
}

// rlimitNames are the resource limits in RLIMIT_* order (asm-generic/resource.h).
var rlimitNames = []string{"cpu", "fsize", "data", "stack", "core", "rss", "nproc", "nofile",
	"memlock", "as", "locks", "sigpending", "msgqueue", "nice", "rtprio", "rttime"}

// checkStatus refuses process state that cr cannot save yet.
func (d *dumper) checkStatus(st *procfs.Stat, s *procfs.Status) error {
	if ns := strings.Fields(s.Fields["NSpid"]); len(ns) > 1 {
		return &UnsupportedError{d.pid, "a process in another pid namespace"}
	}
	return nil
}

// normaliseSyscall rewrites the registers of a task stopped inside a
// syscall so that it restarts (or returns EINTR) when resumed from the image.
func normaliseSyscall(r *ptrace.Regs) *image.InSyscall {
	if int64(r.Orig_rax) < 0 {
		return nil
	}
	res := int64(r.Rax)
	s := &image.InSyscall{Nr: int64(r.Orig_rax), Result: res}
	switch -res {
	case errRestartSys, errRestartNoIntr, errRestartNoHand:
		r.Rax = r.Orig_rax
		r.Rip -= 2
		s.Action = "restart"
	case errRestartBlock:
		// The restart block (e.g. nanosleep's remaining time) is not carried
		// over: the syscall returns EINTR.
		r.Rax = ^uint64(unix.EINTR) + 1 // -EINTR
		s.Action = "eintr"
	default:
		return nil
	}
	r.Orig_rax = ^uint64(0)
	return s
}

// startInjection prepares every thread for injected syscalls (all signals
// blocked) and maps the scratch page through the main thread.
func (d *dumper) startInjection() error {
	pid := d.pid
	var vdso *image.VMA
	for i := range d.proc.VMAs {
		if d.proc.VMAs[i].Special == image.SpecialVdso {
			vdso = &d.proc.VMAs[i]
		}
	}
	if vdso == nil {
		return &UnsupportedError{pid, "a process without a vdso"}
	}
	code := make([]byte, vdso.Len())
	if err := ptrace.Read(pid, uintptr(vdso.Start), code); err != nil {
		return fmt.Errorf("read vdso: %w", err)
	}
	sys, ok := parasite.FindSyscall(code, uintptr(vdso.Start))
	if !ok {
		return fmt.Errorf("no syscall instruction in the vdso of pid %d", pid)
	}
	for _, t := range d.threads {
		if err := d.fixRseq(t); err != nil {
			return fmt.Errorf("thread %d: %w", t.task.Pid, err)
		}
		in, err := parasite.New(t.task, sys)
		if err != nil {
			return err
		}
		t.in = in
	}
	scratch, err := d.mapScratch(d.threads[0].in)
	if err != nil {
		return err
	}
	d.scratch = scratch
	return nil
}

func (d *dumper) read(n int) ([]byte, error) {
	buf := make([]byte, n)
	return buf, ptrace.Read(d.pid, d.scratch, buf)
}

// injectProcess asks the main thread for process-wide state: signal
// dispositions, resource limits, timers, brk and prctl knobs.
func (d *dumper) injectProcess() (err error) {
	in := d.threads[0].in
	scratch := d.scratch
	read := d.read
	le := binary.LittleEndian
	t := &d.proc.Task
	for sig := 1; sig <= 64; sig++ {
		if sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) {
			continue
		}
		if _, err := in.Syscall(unix.SYS_RT_SIGACTION, uintptr(sig), 0, scratch, 8); err != nil {
			return fmt.Errorf("query handler of signal %d: %w", sig, err)
		}
		b, err := read(32)
		if err != nil {
			return err
		}
		t.Sigactions = append(t.Sigactions, image.Sigaction{
			Sig: sig, Handler: le.Uint64(b), Flags: le.Uint64(b[8:]), Restorer: le.Uint64(b[16:]), Mask: le.Uint64(b[24:]),
		})
	}
	// Resource limits: asked inside, because prlimit(2) on another user's
	// process needs CAP_SYS_RESOURCE.
	for res := 0; res < len(rlimitNames); res++ {
		if _, err := in.Syscall(unix.SYS_PRLIMIT64, 0, uintptr(res), 0, scratch); err != nil {
			return fmt.Errorf("getrlimit %s: %w", rlimitNames[res], err)
		}
		b, err := read(16)
		if err != nil {
			return err
		}
		t.Rlimits = append(t.Rlimits, image.Rlimit{Resource: res, Name: rlimitNames[res], Cur: le.Uint64(b), Max: le.Uint64(b[8:])})
	}
	for which := 0; which < 3; which++ {
		if _, err := in.Syscall(unix.SYS_GETITIMER, uintptr(which), scratch); err != nil {
			return fmt.Errorf("getitimer: %w", err)
		}
		b, err := read(32)
		if err != nil {
			return err
		}
		// struct itimerval: it_interval, it_value (each sec, usec)
		iv := int64(le.Uint64(b))*1e6 + int64(le.Uint64(b[8:]))
		v := int64(le.Uint64(b[16:]))*1e6 + int64(le.Uint64(b[24:]))
		if v != 0 || iv != 0 {
			t.Itimers = append(t.Itimers, image.Itimer{Which: which, ValueUs: v, IntervalUs: iv})
		}
	}
	for i := range t.PosixTimers {
		pt := &t.PosixTimers[i]
		if _, err := in.Syscall(unix.SYS_TIMER_GETTIME, uintptr(pt.ID), scratch); err != nil {
			return fmt.Errorf("timer_gettime of timer %d: %w", pt.ID, err)
		}
		b, err := read(32)
		if err != nil {
			return err
		}
		pt.IntervalNs = int64(le.Uint64(b))*1e9 + int64(le.Uint64(b[8:]))
		pt.ValueNs = int64(le.Uint64(b[16:]))*1e9 + int64(le.Uint64(b[24:]))
	}
	brk, err := in.Syscall(unix.SYS_BRK, 0)
	if err != nil {
		return fmt.Errorf("brk: %w", err)
	}
	d.proc.MM.Brk = uint64(brk)
	var b []byte
	// prctl queries that return their value.
	for _, q := range []struct {
		name string
		args []uintptr
		out  func(uintptr)
	}{
		{"personality", nil, func(v uintptr) { t.Personality = uint32(v) }},
		{"PR_GET_DUMPABLE", []uintptr{unix.PR_GET_DUMPABLE}, func(v uintptr) { t.Dumpable = int(v) }},
		{"PR_GET_TIMERSLACK", []uintptr{unix.PR_GET_TIMERSLACK}, func(v uintptr) { t.Sched.TimerSlackNs = uint64(v) }},
		{"PR_GET_SECUREBITS", []uintptr{unix.PR_GET_SECUREBITS}, func(v uintptr) { t.Creds.Securebits = uint32(v) }},
	} {
		var r uintptr
		if q.args == nil {
			r, err = in.Syscall(unix.SYS_PERSONALITY, 0xffffffff)
		} else {
			r, err = in.Syscall(unix.SYS_PRCTL, q.args...)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", q.name, err)
		}
		q.out(r)
	}
	// prctl queries that write an int.
	for _, q := range []struct {
		op  uintptr
		out func(int32)
	}{
		{unix.PR_GET_PDEATHSIG, func(v int32) { t.Pdeathsig = int(v) }},
		{unix.PR_GET_CHILD_SUBREAPER, func(v int32) { t.ChildSubreaper = v != 0 }},
	} {
		if _, err := in.Syscall(unix.SYS_PRCTL, q.op, scratch); err != nil {
			return fmt.Errorf("prctl %d: %w", q.op, err)
		}
		if b, err = read(4); err != nil {
			return err
		}
		q.out(int32(le.Uint32(b)))
	}
	return nil
}

// collectThread reads one thread's state: registers, XSAVE area, signal
// mask and queue, alternate stack, rseq, clear_child_tid, robust list, name.
func (d *dumper) collectThread(t *thread) (th image.Thread, err error) {
	in := t.in
	scratch := d.scratch
	read := d.read
	le := binary.LittleEndian
	tid := t.task.Pid
	th.Tid = tid
	t.regs = in.Saved()
	if th.XSave, err = t.task.GetXState(); err != nil {
		return th, err
	}
	norm := *t.regs
	th.Syscall = normaliseSyscall(&norm)
	th.Regs = image.RegsFromPtrace(&norm)
	th.Sigmask = in.SavedMask()
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/comm", d.pid, tid))
	if err != nil {
		return th, err
	}
	th.Name = strings.TrimSuffix(string(comm), "\n")
	if _, err := in.Syscall(unix.SYS_SIGALTSTACK, 0, scratch); err != nil {
		return th, fmt.Errorf("sigaltstack: %w", err)
	}
	b, err := read(24)
	if err != nil {
		return th, err
	}
	// stack_t: ss_sp, ss_flags (int, padded), ss_size
	if flags := int32(le.Uint32(b[8:])); flags&ssDisable == 0 {
		th.Sigaltstack = &image.Sigaltstack{SP: le.Uint64(b), Flags: flags &^ ssOnstack, Size: le.Uint64(b[16:])}
	}
	if _, err := in.Syscall(unix.SYS_PRCTL, unix.PR_GET_TID_ADDRESS, scratch); err != nil {
		return th, fmt.Errorf("PR_GET_TID_ADDRESS: %w", err)
	}
	if b, err = read(8); err != nil {
		return th, err
	}
	th.ClearChildTid = le.Uint64(b)
	if _, err := in.Syscall(unix.SYS_GET_ROBUST_LIST, 0, scratch, scratch+8); err != nil {
		return th, fmt.Errorf("get_robust_list: %w", err)
	}
	if b, err = read(16); err != nil {
		return th, err
	}
	th.RobustList, th.RobustListLen = le.Uint64(b), le.Uint64(b[8:])
	if th.Rseq, err = rseqConfig(t.task); err != nil {
		return th, err
	}
	if th.Pending, err = pendingSignals(t.task, false); err != nil {
		return th, err
	}
	return th, nil
}

// rseqConfig reads the thread's rseq registration (PTRACE_GET_RSEQ_CONFIGURATION).
func rseqConfig(task *ptrace.Task) (*image.Rseq, error) {
	conf, err := task.GetRseqConfig()
	if err != nil {
		return nil, err
	}
	if conf.Ptr == 0 {
		return nil, nil
	}
	return &image.Rseq{Ptr: conf.Ptr, Size: conf.Size, Signature: conf.Signature}, nil
}

// mapScratch maps one page for syscall output arguments, in a gap with a free
// page on both sides so it cannot merge with (and so change) a neighbour.
func (d *dumper) mapScratch(in *parasite.Injector) (uintptr, error) {
	vmas := d.proc.VMAs
	const ps = image.PageSize
	addr := uint64(0)
	for i := len(vmas) - 1; i > 0 && addr == 0; i-- {
		lo, hi := vmas[i-1].End, vmas[i].Start
		if hi-lo >= 3*ps {
			addr = hi - 2*ps
		}
	}
	if addr == 0 {
		return 0, fmt.Errorf("no room for a scratch page in pid %d", d.pid)
	}
	r, err := in.Syscall(unix.SYS_MMAP, uintptr(addr), ps, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED_NOREPLACE, ^uintptr(0), 0)
	if err != nil {
		return 0, fmt.Errorf("map scratch page: %w", err)
	}
	if r != uintptr(addr) {
		in.Syscall(unix.SYS_MUNMAP, r, ps)
		return 0, fmt.Errorf("scratch page landed at %#x, not %#x", r, addr)
	}
	return r, nil
}
