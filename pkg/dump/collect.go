package dump

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cr-tools/cr/pkg/files"
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

// collectStatic reads what /proc tells of the process without asking the
// task: status, memory map, fds, cwd and root, the executable, credentials.
// It returns every reason to refuse the process it finds (refused), and
// an error only for a failure to read.
func (d *dumper) collectStatic() (refused []error, err error) {
	pid := d.pid
	st, err := procfs.ReadStat(pid)
	if err != nil {
		return nil, err
	}
	status, err := procfs.ReadStatus(pid)
	if err != nil {
		return nil, err
	}
	if err := d.checkStatus(st, status); err != nil {
		refused = append(refused, err)
	}
	d.st, d.status = st, status

	// Memory map and fds first: refusing is cheapest before any injection.
	maps, err := memdump.ReadSmaps(pid)
	if err != nil {
		return nil, err
	}
	if d.proc.VMAs, err = memdump.VMAs(pid, maps); err != nil {
		var ue *memdump.UnsupportedError
		if !errors.As(err, &ue) {
			return nil, err
		}
		refused = append(refused, refusals(pid, err)...)
	}
	ghosts, err := files.GhostVMAs(pid, d.proc.VMAs, d.opt.GhostLimit)
	if err != nil {
		return nil, err
	}
	for _, g := range ghosts {
		refused = append(refused, refusals(pid, g)...)
	}
	fds, err := d.files.Add(pid)
	if err != nil {
		if !files.IsRefusal(err) {
			return nil, err
		}
		refused = append(refused, refusals(pid, err)...)
	}
	d.proc.Fds = fds
	if d.proc.FS, err = d.files.AddFS(pid); err != nil {
		if !isRefusal(err) {
			return nil, err
		}
		refused = append(refused, refusals(pid, err)...)
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return nil, fmt.Errorf("exe of pid %d: %w", pid, err)
	}
	if strings.HasSuffix(exe, " (deleted)") {
		// Saved as a ghost, like the deleted files it maps (pkg/files ghost.go).
		var r error
		if d.proc.MM.Exe, d.proc.MM.ExeGhost, r, err = files.GhostExe(pid, d.opt.GhostLimit); err != nil {
			return nil, err
		}
		if r != nil {
			refused = append(refused, refusals(pid, r)...)
		}
	} else if d.proc.MM.Exe, err = memdump.Identify(fmt.Sprintf("/proc/%d/exe", pid), exe); err != nil {
		return nil, err
	}

	d.proc.Task = image.Task{
		Pid: pid, Ppid: st.Ppid, Pgid: st.Pgrp, Sid: st.Session, Comm: st.Comm,
		Umask: uint32(status.Int("Umask")), NoNewPrivs: status.Int("NoNewPrivs") == 1,
		Tty: st.TtyNr != 0, Tpgid: max(st.Tpgid, 0), Stopped: d.stat.State == 'T' || d.stat.State == 't',
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
		return nil, err
	}
	attr, err := unix.SchedGetAttr(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("sched_getattr of pid %d: %w", pid, err)
	}
	d.proc.Task.Sched = image.Sched{Policy: int(attr.Policy), Nice: int(attr.Nice), RtPriority: int(attr.Priority)}
	if d.proc.Task.PosixTimers, err = posixTimers(pid); err != nil {
		return nil, err
	}
	return refused, nil
}

// collectLive asks the task what only it can tell (injected syscalls) and
// reads its threads' registers; collectStatic came first.
func (d *dumper) collectLive() error {
	pid, st := d.pid, d.st
	var err error
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
		// The restart block (e.g. nanosleep's remaining time) is kernel
		// state the image cannot hold: these registers make the syscall
		// return EINTR. Restore rebuilds the restart block of the calls it
		// knows (pkg/restore/sleep.go) and keeps these only for the others.
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

// wrap adds what failed to an error (nil stays nil).
func wrap(what string, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// injectProcess asks the main thread for process-wide state: signal
// dispositions, resource limits, timers, brk and prctl knobs, in one batch.
func (d *dumper) injectProcess() error {
	in := d.threads[0].in
	le := binary.LittleEndian
	t := &d.proc.Task
	var qs []query
	errf := func(what string, f func(out []byte)) func(parasite.Result, []byte) error {
		return func(r parasite.Result, out []byte) error {
			if err := r.Err(); err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			f(out)
			return nil
		}
	}
	off := 0
	add := func(nr uintptr, size int, what string, f func(out []byte), args ...uintptr) {
		q := query{off: -1, size: size, use: errf(what, f)}
		q.call.Nr = nr
		copy(q.call.Args[:], args)
		if size > 0 {
			q.off = off
			off += (size + 7) &^ 7
		}
		qs = append(qs, q)
	}
	for sig := 1; sig <= 64; sig++ {
		if sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) {
			continue
		}
		add(unix.SYS_RT_SIGACTION, 32, fmt.Sprintf("query handler of signal %d", sig), func(b []byte) {
			t.Sigactions = append(t.Sigactions, image.Sigaction{
				Sig: sig, Handler: le.Uint64(b), Flags: le.Uint64(b[8:]), Restorer: le.Uint64(b[16:]), Mask: le.Uint64(b[24:]),
			})
		}, uintptr(sig), 0, d.outAddr(off), 8)
	}
	// Resource limits: asked inside, because prlimit(2) on another user's
	// process needs CAP_SYS_RESOURCE.
	for res := 0; res < len(rlimitNames); res++ {
		add(unix.SYS_PRLIMIT64, 16, "getrlimit "+rlimitNames[res], func(b []byte) {
			t.Rlimits = append(t.Rlimits, image.Rlimit{Resource: res, Name: rlimitNames[res], Cur: le.Uint64(b), Max: le.Uint64(b[8:])})
		}, 0, uintptr(res), 0, d.outAddr(off))
	}
	for which := 0; which < 3; which++ {
		add(unix.SYS_GETITIMER, 32, "getitimer", func(b []byte) {
			// struct itimerval: it_interval, it_value (each sec, usec)
			iv := int64(le.Uint64(b))*1e6 + int64(le.Uint64(b[8:]))
			v := int64(le.Uint64(b[16:]))*1e6 + int64(le.Uint64(b[24:]))
			if v != 0 || iv != 0 {
				t.Itimers = append(t.Itimers, image.Itimer{Which: which, ValueUs: v, IntervalUs: iv})
			}
		}, uintptr(which), d.outAddr(off))
	}
	add(unix.SYS_BRK, 0, "brk", nil, 0)
	qs[len(qs)-1].use = func(r parasite.Result, _ []byte) error { d.proc.MM.Brk = uint64(r.Val); return r.Err() }
	for _, pr := range []struct {
		name string
		nr   uintptr
		args []uintptr
		set  func(uintptr)
	}{
		{"personality", unix.SYS_PERSONALITY, []uintptr{0xffffffff}, func(v uintptr) { t.Personality = uint32(v) }},
		{"PR_GET_DUMPABLE", unix.SYS_PRCTL, []uintptr{unix.PR_GET_DUMPABLE}, func(v uintptr) { t.Dumpable = int(v) }},
		{"PR_GET_TIMERSLACK", unix.SYS_PRCTL, []uintptr{unix.PR_GET_TIMERSLACK}, func(v uintptr) { t.Sched.TimerSlackNs = uint64(v) }},
		{"PR_GET_SECUREBITS", unix.SYS_PRCTL, []uintptr{unix.PR_GET_SECUREBITS}, func(v uintptr) { t.Creds.Securebits = uint32(v) }},
	} {
		q := query{off: -1}
		q.call.Nr = pr.nr
		copy(q.call.Args[:], pr.args)
		set, name := pr.set, pr.name
		q.use = func(r parasite.Result, _ []byte) error {
			if err := r.Err(); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			set(r.Val)
			return nil
		}
		qs = append(qs, q)
	}
	// The XSAVE features the process may use (AMX must be asked for):
	// Linux 5.16 and later; without it the permission stays unknown (0).
	add(unix.SYS_ARCH_PRCTL, 8, "", nil, archGetXcompPerm, d.outAddr(off))
	qs[len(qs)-1].use = func(r parasite.Result, b []byte) error {
		if r.Err() == nil {
			t.XCompPerm = le.Uint64(b)
		}
		return nil
	}
	add(unix.SYS_PRCTL, 4, "PR_GET_PDEATHSIG", func(b []byte) { t.Pdeathsig = int(int32(le.Uint32(b))) }, unix.PR_GET_PDEATHSIG, d.outAddr(off))
	add(unix.SYS_PRCTL, 4, "PR_GET_CHILD_SUBREAPER", func(b []byte) { t.ChildSubreaper = le.Uint32(b) != 0 }, unix.PR_GET_CHILD_SUBREAPER, d.outAddr(off))
	for i := range t.PosixTimers {
		pt := &t.PosixTimers[i]
		if off+32 > image.PageSize {
			return &UnsupportedError{d.pid, fmt.Sprintf("%d POSIX timers (more than cr can query at once)", len(t.PosixTimers))}
		}
		add(unix.SYS_TIMER_GETTIME, 32, fmt.Sprintf("timer_gettime of timer %d", pt.ID), func(b []byte) {
			pt.IntervalNs = int64(le.Uint64(b))*1e9 + int64(le.Uint64(b[8:]))
			pt.ValueNs = int64(le.Uint64(b[16:]))*1e9 + int64(le.Uint64(b[24:]))
		}, uintptr(pt.ID), d.outAddr(off))
	}
	return d.batch(in, qs)
}

// collectThread reads one thread's state: registers, XSAVE area, signal
// mask and queue, alternate stack, rseq, clear_child_tid, robust list, name.
func (d *dumper) collectThread(t *thread) (th image.Thread, err error) {
	in := t.in
	le := binary.LittleEndian
	tid := t.task.Pid
	th.Tid = tid
	t.regs = in.Saved()
	xs, err := t.task.GetXState()
	if err != nil {
		return th, err
	}
	if th.XState, err = splitXState(xs); err != nil {
		return th, fmt.Errorf("thread %d: %w", tid, err)
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
	qs := []query{
		{call: parasite.Call{Nr: unix.SYS_SIGALTSTACK, Args: [6]uintptr{0, d.outAddr(0)}}, off: 0, size: 24,
			use: func(r parasite.Result, b []byte) error {
				// stack_t: ss_sp, ss_flags (int, padded), ss_size
				if flags := int32(le.Uint32(b[8:])); flags&ssDisable == 0 {
					th.Sigaltstack = &image.Sigaltstack{SP: le.Uint64(b), Flags: flags &^ ssOnstack, Size: le.Uint64(b[16:])}
				}
				return wrap("sigaltstack", r.Err())
			}},
		{call: parasite.Call{Nr: unix.SYS_PRCTL, Args: [6]uintptr{unix.PR_GET_TID_ADDRESS, d.outAddr(32)}}, off: 32, size: 8,
			use: func(r parasite.Result, b []byte) error {
				th.ClearChildTid = le.Uint64(b)
				return wrap("PR_GET_TID_ADDRESS", r.Err())
			}},
		{call: parasite.Call{Nr: unix.SYS_GET_ROBUST_LIST, Args: [6]uintptr{0, d.outAddr(48), d.outAddr(56)}}, off: 48, size: 16,
			use: func(r parasite.Result, b []byte) error {
				th.RobustList, th.RobustListLen = le.Uint64(b), le.Uint64(b[8:])
				return wrap("get_robust_list", r.Err())
			}},
	}
	if err := d.batch(in, qs); err != nil {
		return th, err
	}
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
		if hi-lo >= (scratchPages+2)*ps {
			addr = hi - (scratchPages+1)*ps
		}
	}
	if addr == 0 {
		return 0, fmt.Errorf("no room for a scratch area in pid %d", d.pid)
	}
	r, err := in.Syscall(unix.SYS_MMAP, uintptr(addr), scratchPages*ps, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED_NOREPLACE, ^uintptr(0), 0)
	if err != nil {
		return 0, fmt.Errorf("map scratch area: %w", err)
	}
	if r != uintptr(addr) {
		in.Syscall(unix.SYS_MUNMAP, r, scratchPages*ps)
		return 0, fmt.Errorf("scratch area landed at %#x, not %#x", r, addr)
	}
	// The first page holds the batch code, read-only and executable.
	if _, err := in.Syscall(unix.SYS_MPROTECT, r, ps, unix.PROT_READ|unix.PROT_EXEC); err != nil {
		in.Syscall(unix.SYS_MUNMAP, r, scratchPages*ps)
		return 0, fmt.Errorf("protect batch code page: %w", err)
	}
	if err := parasite.PrepareBatchPage(d.pid, r); err != nil {
		in.Syscall(unix.SYS_MUNMAP, r, scratchPages*ps)
		return 0, err
	}
	return r, nil
}

// The scratch area: [batch code][batch table, 2 pages][output page].
const (
	scratchPages = 4
	tableOff     = image.PageSize
	tableSize    = 2 * image.PageSize
	outOff       = 3 * image.PageSize
)

// query is one injected syscall of a batch and what to do with its result
// and its output bytes (out bytes at outOff+off in the scratch area).
type query struct {
	call parasite.Call
	off  int // offset of its output in the output page (-1: none)
	size int
	use  func(r parasite.Result, out []byte) error
}

// batch runs the queries in the thread with as few stops as the table
// allows, then hands each its result and output.
func (d *dumper) batch(in *parasite.Injector, qs []query) error {
	per := tableSize/parasite.BatchEntrySize - 1
	var results []parasite.Result
	for i := 0; i < len(qs); i += per {
		calls := make([]parasite.Call, 0, per)
		for _, q := range qs[i:min(i+per, len(qs))] {
			calls = append(calls, q.call)
		}
		rs, err := in.Batch(d.scratch, d.scratch+tableOff, calls)
		if err != nil {
			return err
		}
		results = append(results, rs...)
	}
	out := make([]byte, image.PageSize)
	if err := ptrace.Read(d.pid, d.scratch+outOff, out); err != nil {
		return err
	}
	for i, q := range qs {
		var b []byte
		if q.off >= 0 {
			b = out[q.off : q.off+q.size]
		}
		if err := q.use(results[i], b); err != nil {
			return err
		}
	}
	return nil
}

// outAddr is the address of offset off in the output page.
func (d *dumper) outAddr(off int) uintptr { return d.scratch + outOff + uintptr(off) }
