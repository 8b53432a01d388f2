package ptrace

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Regs is the x86-64 user_regs_struct (it includes fs_base and gs_base).
type Regs = unix.PtraceRegs

// GetRegs reads the general registers.
func (k *Task) GetRegs() (*Regs, error) {
	var r Regs
	err := k.t.Do(func() error {
		if err := unix.PtraceGetRegs(k.Pid, &r); err != nil {
			return &Error{"getregs", k.Pid, err}
		}
		return nil
	})
	return &r, err
}

// SetRegs writes the general registers.
func (k *Task) SetRegs(r *Regs) error {
	return k.t.Do(func() error {
		if err := unix.PtraceSetRegs(k.Pid, r); err != nil {
			return &Error{"setregs", k.Pid, err}
		}
		return nil
	})
}

// maxXState bounds the XSAVE buffer; the kernel trims the iovec to the real
// size (2696 bytes with AVX-512 here).
const maxXState = 16 << 10

// GetXState reads the full XSAVE area (PTRACE_GETREGSET, NT_X86_XSTATE).
func (k *Task) GetXState() ([]byte, error) {
	buf := make([]byte, maxXState)
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	err := k.doPtr("getregset xstate", unix.PTRACE_GETREGSET, unix.NT_X86_XSTATE, unsafe.Pointer(&iov))
	if err != nil {
		return nil, err
	}
	return buf[:iov.Len], nil
}

// SetXState writes the XSAVE area; the buffer must have the full size.
func (k *Task) SetXState(x []byte) error {
	iov := unix.Iovec{Base: &x[0]}
	iov.SetLen(len(x))
	return k.doPtr("setregset xstate", unix.PTRACE_SETREGSET, unix.NT_X86_XSTATE, unsafe.Pointer(&iov))
}

// GetSigmask reads the blocked signal mask.
func (k *Task) GetSigmask() (uint64, error) {
	var m uint64
	err := k.doPtr("getsigmask", unix.PTRACE_GETSIGMASK, 8, unsafe.Pointer(&m))
	return m, err
}

// SetSigmask sets the blocked signal mask.
func (k *Task) SetSigmask(m uint64) error {
	return k.doPtr("setsigmask", unix.PTRACE_SETSIGMASK, 8, unsafe.Pointer(&m))
}

// RseqConfig is struct ptrace_rseq_configuration.
type RseqConfig struct {
	Ptr       uint64
	Size      uint32
	Signature uint32
	Flags     uint32
	_         uint32
}

// GetRseqConfig reads PTRACE_GET_RSEQ_CONFIGURATION.
func (k *Task) GetRseqConfig() (RseqConfig, error) {
	var c RseqConfig
	err := k.doPtr("get_rseq_configuration", 0x420f, unsafe.Sizeof(c), unsafe.Pointer(&c))
	return c, err
}

// SeccompFilter returns the classic BPF program of the task's seccomp filter
// number index (0 = the most recently installed), PTRACE_SECCOMP_GET_FILTER.
// It returns unix.ENOENT past the last filter.
func (k *Task) SeccompFilter(index int) ([]byte, error) {
	var prog []byte
	err := k.t.Do(func() error {
		n, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SECCOMP_GET_FILTER, uintptr(k.Pid), uintptr(index), 0, 0, 0)
		if e != 0 {
			return &Error{"seccomp_get_filter", k.Pid, e}
		}
		prog = make([]byte, n*8)
		if n == 0 {
			return nil
		}
		_, _, e = unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SECCOMP_GET_FILTER, uintptr(k.Pid), uintptr(index), uintptr(unsafe.Pointer(&prog[0])), 0, 0)
		if e != 0 {
			return &Error{"seccomp_get_filter", k.Pid, e}
		}
		return nil
	})
	return prog, err
}

// SeccompFlags returns the install flags of filter index
// (PTRACE_SECCOMP_GET_METADATA).
func (k *Task) SeccompFlags(index int) (uint64, error) {
	md := struct{ FilterOff, Flags uint64 }{FilterOff: uint64(index)}
	err := k.doPtr("seccomp_get_metadata", 0x420d, unsafe.Sizeof(md), unsafe.Pointer(&md))
	return md.Flags, err
}
