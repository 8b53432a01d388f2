package parasite

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/cr-tools/cr/pkg/ptrace"
	"golang.org/x/sys/unix"
)

// Fail-safe injection (invariant 1 of DESIGN.md: a target survives a cr that
// is SIGKILLed at any moment).
//
// When the tracer dies the kernel detaches its tracees and each resumes from
// the registers it holds; one in a signal-delivery-stop also gets the stop's
// signal. So, for a task seized without PTRACE_O_EXITKILL (a dump):
//
//   - At rest (between injections) the task holds its own registers and its
//     own signal mask, and sits in a PTRACE_EVENT_STOP or a syscall stop
//     (PTRACE_O_TRACESYSGOOD: the kernel's "send the stop signal" after a
//     syscall stop then names signal 0x85, which does not exist), never in a
//     signal-delivery-stop.
//   - While it runs injected code (or is stopped inside it) its registers
//     lead, if nobody stops it, to `mov $15, %eax; syscall` (rt_sigreturn)
//     with rsp pointing at an rt_sigframe that holds its own registers, XSAVE
//     state and signal mask (frame_amd64.go).
//
// Batch (on a page prepared by PrepareBatchPage): the code runs the table,
// stores 1 in the end entry and parks in ppoll(NULL, 0, 1 s); the tracer sees
// the flag and stops it there with PTRACE_INTERRUPT. If the tracer is gone the
// ppoll times out and the code runs rt_sigreturn; the frame is the one below
// the task's [stack] that single syscalls use (see below) or, for a thread
// without one, lives in the code page itself, after the code (the page is
// cr's own). On the stack, a signal handled while the batch runs with the
// task's own mask (cr died between setting the registers and the mask) finds
// room for its signal frame; in the read-only code page it cannot, and the
// task dies of SIGSEGV, so RunUntilParked orders its requests to make that
// state last microseconds at most (pkg/ptrace).
//
// Syscall: the syscall runs at a vdso `syscall` followed by `xor...; ret`,
// with rsp at a frame built below the red zone of the task's [stack] whose
// first slot (the return address) is an rt_sigreturn gadget found in the
// task's libc (or executable). The tracer stops it at the syscall's
// enter and exit stops (PTRACE_SYSCALL). Without such a stack, gadget or vdso
// code the syscall still runs this way, only without the frame.
//
// CR_PARASITE_FAILSAFE=off in the environment turns all of this off (tests
// use it to show that their checks catch the failure).

// failsafeOff reports whether the fail-safe mechanism is switched off.
func failsafeOff() bool { return os.Getenv("CR_PARASITE_FAILSAFE") == "off" }

// injectMask is the signal mask while injected code runs: everything blocked
// but SIGTRAP (see New).
const injectMask = ^uint64(0) &^ (1 << (unix.SIGTRAP - 1))

// The fail-safe batch code: batchCode's loop, then a tail that marks the end
// and parks, then rt_sigreturn.
var failsafeCode = []byte{
	// loop: as batchCode, but `je tail`
	0x48, 0x8b, 0x03, 0x48, 0x83, 0xf8, 0xff, 0x74, 0x24, 0x48, 0x8b, 0x7b,
	0x08, 0x48, 0x8b, 0x73, 0x10, 0x48, 0x8b, 0x53, 0x18, 0x4c, 0x8b, 0x53,
	0x20, 0x4c, 0x8b, 0x43, 0x28, 0x4c, 0x8b, 0x4b, 0x30, 0x0f, 0x05, 0x48,
	0x89, 0x43, 0x38, 0x48, 0x83, 0xc3, 0x40, 0xeb, 0xd3,
	// tail (0x2d):
	0x48, 0xc7, 0x43, 0x38, 0x01, 0x00, 0x00, 0x00, // mov qword [rbx+56], 1  ; the flag
	0x31, 0xff, //                                     xor edi, edi           ; fds
	0x31, 0xf6, //                                     xor esi, esi           ; nfds
	0x48, 0x8d, 0x53, 0x08, //                         lea rdx, [rbx+8]       ; timeout
	0x45, 0x31, 0xd2, //                               xor r10d, r10d         ; sigmask
	0x45, 0x31, 0xc0, //                               xor r8d, r8d
	0xb8, 0x0f, 0x01, 0x00, 0x00, //                   mov eax, 271 (ppoll)
	0x0f, 0x05, //                                     syscall
	// parked (0x4a):
	0xb8, 0x0f, 0x00, 0x00, 0x00, //                   mov eax, 15 (rt_sigreturn)
	0x0f, 0x05, //                                     syscall
}

const (
	fsTailOff    = 0x2d
	fsParkedOff  = 0x4a
	fsLegacyOff  = 128 // batchCode (int3-terminated) for injectors without fail-safe
	fsFrameOff   = 256 // the frame area, up to the end of the page
	parkSeconds  = 1   // how long a batch whose tracer died waits before rt_sigreturn
	pageSize     = 4096
	exitKillFlag = 0x100000 // PTRACE_O_EXITKILL
)

// frameOwners remembers which thread's frame each fail-safe code page holds
// (one frame per page: only the thread that runs injected code needs one).
var frameOwners sync.Map // frameKey -> tid

type frameKey struct {
	pid  int
	code uintptr
}

// gadgets caches the rt_sigreturn gadget per process (0: none found).
var gadgets sync.Map // tgid -> uint64

type mapping struct {
	start, end uint64
	perms      string
	path       string
}

func readMaps(pid int) ([]mapping, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mapping
	s := bufio.NewScanner(f)
	for s.Scan() {
		var m mapping
		var off, inode uint64
		var dev string
		n, _ := fmt.Sscanf(s.Text(), "%x-%x %s %x %s %d", &m.start, &m.end, &m.perms, &off, &dev, &inode)
		if n < 6 {
			continue
		}
		if f := strings.Fields(s.Text()); len(f) >= 6 {
			m.path = strings.Join(f[5:], " ")
		}
		out = append(out, m)
	}
	return out, s.Err()
}

// setupFailsafe is New's part for fail-safe injection.
func (in *Injector) setupFailsafe(opts int) error {
	task := in.task
	if opts&unix.PTRACE_O_TRACESYSGOOD == 0 {
		if err := task.SetOptions(opts | unix.PTRACE_O_TRACESYSGOOD); err != nil {
			return err
		}
	}
	x, err := task.GetXState()
	if err != nil {
		return err
	}
	in.xsave = sigXState(x)
	in.failsafe = true
	in.tgid = task.Pid
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", task.Pid)); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "Tgid:"); ok {
				fmt.Sscan(v, &in.tgid)
			}
		}
	}
	maps, err := readMaps(task.Pid)
	if err != nil {
		return nil // no frame for single syscalls
	}
	in.maps = maps
	for _, m := range maps {
		if uint64(in.SysAddr) < m.start || uint64(in.SysAddr) >= m.end || m.path != "[vdso]" {
			continue
		}
		code := make([]byte, m.end-m.start)
		if ptrace.Read(task.Pid, uintptr(m.start), code) != nil {
			break
		}
		for off := 0; ; {
			i := bytes.Index(code[off:], []byte{0x0f, 0x05})
			if i < 0 {
				break
			}
			if returnsAfterSyscall(code, off+i) {
				in.sysRet = uintptr(m.start) + uintptr(off+i)
				break
			}
			off += i + 2
		}
	}
	return nil
}

// sigreturnGadgetFor finds `mov $15, %rax; syscall` in the task's libc or,
// failing that, its other executable file mappings.
func sigreturnGadgetFor(pid, tgid int, maps []mapping) uint64 {
	if g, ok := gadgets.Load(tgid); ok {
		return g.(uint64)
	}
	var found uint64
	for pass := 0; pass < 2 && found == 0; pass++ {
		for _, m := range maps {
			if !strings.HasPrefix(m.path, "/") || len(m.perms) < 3 || m.perms[2] != 'x' {
				continue
			}
			if isLibc := strings.Contains(m.path, "libc"); (pass == 0) != isLibc || m.end-m.start > 64<<20 {
				continue
			}
			code := make([]byte, m.end-m.start)
			if ptrace.Read(pid, uintptr(m.start), code) != nil {
				continue
			}
			if i := bytes.Index(code, sigreturnGadget); i >= 0 {
				found = m.start + uint64(i)
				break
			}
		}
	}
	gadgets.Store(tgid, found)
	return found
}

// stackFrame returns the address of the frame for single syscalls, building
// it on first use (0: none; the syscall then runs without one).
func (in *Injector) stackFrame() uint64 {
	if in.frameTried {
		return in.frameAddr
	}
	in.frameTried = true
	if in.sysRet == 0 || len(in.xsave) < 512 {
		return 0
	}
	sp := in.saved.Rsp
	size := uint64(frameSize(len(in.xsave)))
	addr := (sp - redZone - size) &^ (frameAlign - 1)
	ok := false
	for _, m := range in.maps {
		// Only the main stack: below the red zone of anything else (a
		// goroutine stack in a Go heap, say) may be live data.
		if m.path == "[stack]" && sp > m.start && sp <= m.end && addr >= m.start {
			ok = true
		}
	}
	if !ok {
		return 0
	}
	g := sigreturnGadgetFor(in.task.Pid, in.tgid, in.maps)
	if g == 0 {
		return 0
	}
	frame := buildFrame(addr, g, in.saved, in.xsave, in.mask)
	orig := make([]byte, len(frame))
	if ptrace.Read(in.task.Pid, uintptr(addr), orig) != nil {
		return 0
	}
	if ptrace.Write(in.task.Pid, uintptr(addr), frame) != nil {
		return 0
	}
	in.frameAddr, in.frameOrig = addr, orig
	return addr
}

// pageFrame makes sure the fail-safe code page at code holds this thread's
// frame and returns its address (0 if it does not fit).
func (in *Injector) pageFrame(code uintptr) (uint64, error) {
	addr := (uint64(code) + fsFrameOff + frameAlign - 1) &^ (frameAlign - 1)
	end := (uint64(code) | (pageSize - 1)) + 1
	if addr+uint64(frameSize(len(in.xsave))) > end {
		return 0, nil
	}
	key := frameKey{in.tgid, code}
	if tid, ok := frameOwners.Load(key); ok && tid.(int) == in.task.Pid && in.pageFrameAt == code {
		return addr, nil
	}
	frame := buildFrame(addr, 0, in.saved, in.xsave, in.mask)
	if err := ptrace.Write(in.task.Pid, uintptr(addr), frame); err != nil {
		return 0, fmt.Errorf("write frame: %w", err)
	}
	frameOwners.Store(key, in.task.Pid)
	in.pageFrameAt = code
	return addr, nil
}
