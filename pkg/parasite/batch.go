package parasite

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"github.com/cr-tools/cr/pkg/ptrace"
	"golang.org/x/sys/unix"
)

// BatchEntrySize is the size of one entry of a batch table: nr, six
// arguments and the result, eight u64.
const BatchEntrySize = 64

// BatchTableSize is the room a batch of n calls needs at its table address
// (one entry more for the end marker).
func BatchTableSize(n int) int { return (n + 1) * BatchEntrySize }

// Call is one syscall of a batch.
type Call struct {
	Nr   uintptr
	Args [6]uintptr
}

// Result is what one syscall of a batch returned.
type Result struct {
	Nr    uintptr
	Val   uintptr    // the return value when Errno is 0
	Errno unix.Errno // the error the syscall returned, or 0
}

// Err returns nil or, like Syscall, a *SyscallError wrapping the errno.
func (r Result) Err() error {
	if r.Errno == 0 {
		return nil
	}
	return &SyscallError{Nr: r.Nr, Err: r.Errno}
}

// PrepareBatchPage writes BatchCode at addr in pid through /proc/PID/mem,
// which writes through page protections: map the page PROT_READ|PROT_EXEC
// with one injected mmap, then call this.
//
// Unless fail-safe injection is switched off, the page gets the fail-safe
// batch code (see failsafe.go), which Batch recognises; the rest of the page
// is then used for a signal frame, so the page must be cr's alone.
func PrepareBatchPage(pid int, addr uintptr) error {
	if failsafeOff() {
		return ptrace.Write(pid, addr, batchCode)
	}
	page := make([]byte, fsLegacyOff+len(batchCode))
	copy(page, failsafeCode)
	copy(page[fsLegacyOff:], batchCode)
	return ptrace.Write(pid, addr, page)
}

// notBatchable are syscalls Batch refuses: a new task would run the rest of
// the batch too (clone, fork), or the task would not come back to the int3.
var notBatchable = map[uintptr]bool{
	unix.SYS_CLONE: true, unix.SYS_CLONE3: true, unix.SYS_FORK: true, unix.SYS_VFORK: true,
	unix.SYS_EXECVE: true, unix.SYS_EXECVEAT: true, unix.SYS_EXIT: true, unix.SYS_EXIT_GROUP: true,
	unix.SYS_RT_SIGRETURN: true,
}

// Batch runs calls in the task, in order, in one resume/stop cycle, and
// returns one Result per call; a syscall that fails does not stop the ones
// after it.
//
// code is the address of BatchCode() in an executable mapping of the task
// (see PrepareBatchPage); its bytes are checked once per address. table is
// writable memory of the task with room for BatchTableSize(len(calls))
// bytes, written with process_vm_writev, so it must be writable by the task
// itself (a scratch mapping cr made: writing pins, and so unshares, pages).
// The calls must leave code and table mapped; Batch refuses clone, fork,
// vfork, clone3, execve, execveat, exit, exit_group and rt_sigreturn.
//
// The task runs from the injector's base registers (see SetBase) with rip at
// code, rbx at table and orig_rax -1; Release puts the saved ones back. All
// signals but SIGTRAP stay blocked. If the task stops for anything but the
// final int3 (a fault, a stray SIGTRAP, a timeout), the error says why (a
// *ptrace.StopError for a signal, ptrace.ErrTimeout, *ptrace.ExitedError
// for a task that died) and the results returned are those of the calls that
// completed; the call after them may have run as well. A fault leaves more
// behind than the error: the kernel resets the task's handler of the
// (blocked) fault signal to SIG_DFL. A call interrupted by a stop and
// restarted through restart_block (nanosleep, clock_nanosleep, poll, ...)
// replaces the task's own restart_block, which the task's interrupted syscall
// may need when it is resumed: do not batch calls that can block.
func (in *Injector) Batch(code, table uintptr, calls []Call) ([]Result, error) {
	if len(calls) == 0 {
		return nil, nil
	}
	for i, c := range calls {
		if notBatchable[c.Nr] || c.Nr == ^uintptr(0) {
			return nil, fmt.Errorf("injected batch: syscall %d (call %d) cannot be batched", c.Nr, i)
		}
	}
	pid := in.task.Pid
	if in.escaped {
		return nil, fmt.Errorf("injected batch: %w", ptrace.ErrEscaped)
	}
	if in.batchCode != code {
		have := make([]byte, fsLegacyOff+len(batchCode))
		if err := ptrace.Read(pid, code, have[:len(batchCode)]); err != nil {
			return nil, fmt.Errorf("injected batch: read code: %w", err)
		}
		in.batchFS = false
		if !bytes.Equal(have[:len(batchCode)], batchCode) {
			if err := ptrace.Read(pid, code, have); err != nil || !bytes.Equal(have[:len(failsafeCode)], failsafeCode) ||
				!bytes.Equal(have[fsLegacyOff:], batchCode) {
				return nil, fmt.Errorf("injected batch: no batch code at %#x in pid %d", code, pid)
			}
			in.batchFS = true
		}
		in.batchCode = code
	}
	entry := code
	var frame uint64
	if in.batchFS {
		entry = code + fsLegacyOff
		if in.failsafe {
			// The frame goes below the red zone of the task's own stack
			// where there is one, as for single syscalls, so that rsp
			// points at memory a signal frame can be written below: if cr
			// dies between setting the batch's registers and blocking the
			// signals, or between unblocking them and putting the
			// registers back, a signal that arrives meanwhile runs the
			// task's handler on its stack and returns into the batch code.
			// With rsp in the (read-only) code page the kernel cannot
			// write the signal frame and kills the task with SIGSEGV.
			frame = in.stackFrame()
			if frame == 0 {
				var err error
				if frame, err = in.pageFrame(code); err != nil {
					return nil, fmt.Errorf("injected batch: %w", err)
				}
			}
			if frame != 0 {
				entry = code
			}
		}
	}

	le := binary.LittleEndian
	n := len(calls)
	buf := make([]byte, BatchTableSize(n))
	for i, c := range calls {
		e := buf[i*BatchEntrySize:]
		le.PutUint64(e, uint64(c.Nr))
		for j, a := range c.Args {
			le.PutUint64(e[8+8*j:], uint64(a))
		}
	}
	le.PutUint64(buf[n*BatchEntrySize:], ^uint64(0))
	if entry == code && in.batchFS {
		// The fail-safe tail's ppoll timeout, and its flag (cleared).
		le.PutUint64(buf[n*BatchEntrySize+8:], parkSeconds)
	}
	if err := writeVM(pid, table, buf); err != nil {
		return nil, fmt.Errorf("injected batch: write table: %w", err)
	}

	r := in.cur
	r.Rip = uint64(entry)
	r.Rbx = uint64(table)
	r.Orig_rax = ^uint64(0)    // no syscall-restart fix-ups on the way out of the stop
	r.Eflags &^= 0x100 | 0x400 // TF, DF
	in.Count += n
	var out ptrace.Regs
	var err error
	end := uint64(entry) + uint64(len(batchCode))
	tableEnd := uint64(table) + uint64(n*BatchEntrySize)
	switch {
	case frame != 0:
		r.Rsp = frame + 8 // rt_sigreturn's view: the frame's pretcode slot consumed
		end = uint64(code) + uint64(len(failsafeCode))
		err = in.task.RunUntilParked(&r, injectMask, uintptr(tableEnd+56), uint64(code)+fsTailOff, uint64(code)+fsParkedOff, &out, in.mask, in.saved)
		if errors.Is(err, ptrace.ErrEscaped) {
			in.escaped = true
			return nil, fmt.Errorf("injected batch: %w (at %#x)", err, out.Rip)
		}
		if err == nil && out.Rbx != tableEnd {
			err = fmt.Errorf("parked with rbx %#x, not %#x", out.Rbx, tableEnd)
		}
	case in.failsafe:
		// No room for a frame: run the int3-terminated code, signals
		// blocked only meanwhile.
		if err = in.task.SetSigmask(injectMask); err == nil {
			err = in.task.RunUntilTrap(&r, &out)
		}
		if err == nil {
			err = in.task.SetSigmask(in.mask)
		}
		if err == nil {
			err = in.task.SetRegs(in.saved)
		}
	default:
		err = in.task.RunUntilTrap(&r, &out)
	}
	if err == nil && frame == 0 && (out.Rip != end || out.Rbx != tableEnd) {
		err = fmt.Errorf("stopped by a SIGTRAP at %#x (rbx %#x), not by the int3 at the end of the batch code (%#x, rbx %#x): %w",
			out.Rip, out.Rbx, end-1, tableEnd, &ptrace.StopError{Pid: pid, Sig: unix.SIGTRAP})
	}
	done := n
	if err != nil {
		var exited *ptrace.ExitedError
		if errors.As(err, &exited) || out.Rip < uint64(entry) || out.Rip > end || out.Rbx < uint64(table) || out.Rbx > tableEnd {
			return nil, fmt.Errorf("injected batch: %w", err)
		}
		// Entries below rbx have their result stored.
		done = int((out.Rbx - uint64(table)) / BatchEntrySize)
	}
	res := make([]Result, done)
	if done > 0 {
		if rerr := ptrace.Read(pid, table, buf[:done*BatchEntrySize]); rerr != nil {
			if err == nil {
				err = rerr
			}
			return nil, fmt.Errorf("injected batch: read results: %w", err)
		}
	}
	for i := range res {
		v := le.Uint64(buf[i*BatchEntrySize+56:])
		res[i].Nr = calls[i].Nr
		if int64(v) < 0 && int64(v) > -4096 {
			res[i].Errno = unix.Errno(-int64(v))
		} else {
			res[i].Val = uintptr(v)
		}
	}
	if err != nil {
		return res, fmt.Errorf("injected batch (%d of %d calls done): %w", done, n, err)
	}
	return res, nil
}

// writeVM writes buf at addr of pid with one process_vm_writev.
func writeVM(pid int, addr uintptr, buf []byte) error {
	local := []unix.Iovec{{Base: unsafe.SliceData(buf)}}
	local[0].SetLen(len(buf))
	w, err := ptrace.WriteVM(pid, local, []unix.RemoteIovec{{Base: addr, Len: len(buf)}})
	if err == nil && w != len(buf) {
		err = fmt.Errorf("short write to %#x: %d of %d bytes", addr, w, len(buf))
	}
	return err
}
