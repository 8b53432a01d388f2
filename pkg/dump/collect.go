package dump

import (
	"encoding/binary"
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
	if err := d.checkStatus(status); err != nil {
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
	tab, err := fdinfo.Read(pid, 1)
	if err != nil {
		return unsupported(pid, err)
	}
	d.fds, d.files = tab.Fds, tab.Files
	if d.proc.FS, err = fdinfo.ReadFS(pid); err != nil {
		return unsupported(pid, err)
	}

	// CPU state.
	th := image.Thread{Tid: pid}
	if d.regs, err = d.task.GetRegs(); err != nil {
		return err
	}
	if th.XSave, err = d.task.GetXState(); err != nil {
		return err
	}
	norm := *d.regs
	th.Syscall = normaliseSyscall(&norm)
	th.Regs = image.RegsFromPtrace(&norm)

	// What only the task can tell.
	if err := d.inject(&th); err != nil {
		return err
	}
	d.proc.Threads = []image.Thread{th}

	// inject filled in Task.Sigactions: keep them.
	d.proc.Task = image.Task{
		Pid: pid, Ppid: st.Ppid, Pgid: st.Pgrp, Sid: st.Session, Comm: st.Comm,
		Umask: uint32(status.Int("Umask")), Sigactions: d.proc.Task.Sigactions,
	}
	creds := &d.proc.Task.Creds
	copy(creds.Uid[:], status.Uint32s("Uid"))
	copy(creds.Gid[:], status.Uint32s("Gid"))
	creds.Groups = status.Uint32s("Groups")
	if creds.Groups == nil {
		creds.Groups = []uint32{}
	}
	for r, name := range rlimitNames {
		var lim unix.Rlimit
		if err := unix.Prlimit(pid, r, nil, &lim); err != nil {
			return fmt.Errorf("prlimit %s of pid %d: %w", name, pid, err)
		}
		d.proc.Task.Rlimits = append(d.proc.Task.Rlimits, image.Rlimit{Resource: r, Name: name, Cur: lim.Cur, Max: lim.Max})
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

var rlimitNames = map[int]string{
	unix.RLIMIT_CPU: "cpu", unix.RLIMIT_FSIZE: "fsize", unix.RLIMIT_DATA: "data", unix.RLIMIT_STACK: "stack",
	unix.RLIMIT_CORE: "core", unix.RLIMIT_RSS: "rss", unix.RLIMIT_NPROC: "nproc", unix.RLIMIT_NOFILE: "nofile",
	unix.RLIMIT_MEMLOCK: "memlock", unix.RLIMIT_AS: "as", unix.RLIMIT_LOCKS: "locks", unix.RLIMIT_SIGPENDING: "sigpending",
	unix.RLIMIT_MSGQUEUE: "msgqueue", 13: "nice", unix.RLIMIT_RTPRIO: "rtprio", 15: "rttime",
}

// checkStatus refuses process state that the process-state work adds later.
func (d *dumper) checkStatus(s *procfs.Status) error {
	pid := d.pid
	if p := s.Hex("SigPnd") | s.Hex("ShdPnd"); p != 0 {
		return &UnsupportedError{pid, fmt.Sprintf("pending signals (mask %#x)", p)}
	}
	if s.Int("Seccomp") != 0 {
		return &UnsupportedError{pid, "a seccomp filter"}
	}
	if ns := strings.Fields(s.Fields["NSpid"]); len(ns) > 1 {
		return &UnsupportedError{pid, "a process in another pid namespace"}
	}
	if t, err := os.ReadFile(fmt.Sprintf("/proc/%d/timers", pid)); err == nil && len(t) > 0 {
		return &UnsupportedError{pid, "POSIX timers (timer_create)"}
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

// inject asks the task what only it can tell: signal dispositions, brk,
// timers and the alternate stack (refused for now), rseq, clear_child_tid.
func (d *dumper) inject(th *image.Thread) error {
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
	in, err := parasite.New(d.task, sys)
	if err != nil {
		return err
	}
	d.in = in
	th.Sigmask = in.SavedMask()

	scratch, err := d.mapScratch()
	if err != nil {
		return err
	}
	defer func() {
		if _, uerr := in.Syscall(unix.SYS_MUNMAP, scratch, image.PageSize); uerr != nil && err == nil {
			err = fmt.Errorf("unmap scratch page: %w", uerr)
		}
	}()
	buf := make([]byte, 64)
	read := func(n int) ([]byte, error) { return buf[:n], ptrace.Read(pid, scratch, buf[:n]) }

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
		le := binary.LittleEndian
		d.proc.Task.Sigactions = append(d.proc.Task.Sigactions, image.Sigaction{
			Sig: sig, Handler: le.Uint64(b), Flags: le.Uint64(b[8:]), Restorer: le.Uint64(b[16:]), Mask: le.Uint64(b[24:]),
		})
	}
	for which, name := range []string{"ITIMER_REAL", "ITIMER_VIRTUAL", "ITIMER_PROF"} {
		if _, err := in.Syscall(unix.SYS_GETITIMER, uintptr(which), scratch); err != nil {
			return fmt.Errorf("getitimer: %w", err)
		}
		b, err := read(32)
		if err != nil {
			return err
		}
		for _, x := range []int{0, 8, 16, 24} {
			if binary.LittleEndian.Uint64(b[x:]) != 0 {
				return &UnsupportedError{pid, "an armed interval timer (" + name + ")"}
			}
		}
	}
	if _, err := in.Syscall(unix.SYS_SIGALTSTACK, 0, scratch); err != nil {
		return fmt.Errorf("sigaltstack: %w", err)
	}
	b, err := read(24)
	if err != nil {
		return err
	}
	if binary.LittleEndian.Uint32(b[8:])&ssDisable == 0 {
		return &UnsupportedError{pid, "an alternate signal stack (sigaltstack)"}
	}
	brk, err := in.Syscall(unix.SYS_BRK, 0)
	if err != nil {
		return fmt.Errorf("brk: %w", err)
	}
	d.proc.MM.Brk = uint64(brk)
	if _, err := in.Syscall(unix.SYS_PRCTL, unix.PR_GET_TID_ADDRESS, scratch); err != nil {
		return fmt.Errorf("PR_GET_TID_ADDRESS: %w", err)
	}
	if b, err = read(8); err != nil {
		return err
	}
	th.ClearChildTid = binary.LittleEndian.Uint64(b)
	th.Rseq, err = d.rseq()
	return err
}

// rseq reads the thread's rseq registration (PTRACE_GET_RSEQ_CONFIGURATION).
func (d *dumper) rseq() (*image.Rseq, error) {
	conf, err := d.task.GetRseqConfig()
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
func (d *dumper) mapScratch() (uintptr, error) {
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
	r, err := d.in.Syscall(unix.SYS_MMAP, uintptr(addr), ps, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED_NOREPLACE, ^uintptr(0), 0)
	if err != nil {
		return 0, fmt.Errorf("map scratch page: %w", err)
	}
	if r != uintptr(addr) {
		d.in.Syscall(unix.SYS_MUNMAP, r, ps)
		return 0, fmt.Errorf("scratch page landed at %#x, not %#x", r, addr)
	}
	return r, nil
}
