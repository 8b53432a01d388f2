package ptrace

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// ReadVM reads remote ranges of pid's memory into local buffers with one
// process_vm_readv call (at most IOV_MAX entries each side) and returns the
// number of bytes read. It does not need the tracer thread.
func ReadVM(pid int, local []unix.Iovec, remote []unix.RemoteIovec) (int, error) {
	n, err := unix.ProcessVMReadv(pid, local, remote, 0)
	if err != nil {
		return n, &Error{"process_vm_readv", pid, err}
	}
	return n, nil
}

// WriteVM writes local buffers to remote ranges with process_vm_writev.
func WriteVM(pid int, local []unix.Iovec, remote []unix.RemoteIovec) (int, error) {
	n, err := unix.ProcessVMWritev(pid, local, remote, 0)
	if err != nil {
		return n, &Error{"process_vm_writev", pid, err}
	}
	return n, nil
}

// Read copies len(buf) bytes at addr of pid into buf; a short read is an error.
func Read(pid int, addr uintptr, buf []byte) error {
	if len(buf) == 0 {
		return nil
	}
	local := []unix.Iovec{{Base: &buf[0]}}
	local[0].SetLen(len(buf))
	n, err := ReadVM(pid, local, []unix.RemoteIovec{{Base: addr, Len: len(buf)}})
	if err == nil && n != len(buf) {
		err = &Error{"process_vm_readv", pid, unix.EFAULT}
	}
	return err
}

// Write copies buf to addr of pid through /proc/PID/mem, which also writes
// into pages the task cannot write itself.
func Write(pid int, addr uintptr, buf []byte) error {
	f, err := ProcMem(pid)
	if err != nil {
		return &Error{"open mem", pid, err}
	}
	defer f.Close()
	n, err := f.WriteAt(buf, int64(addr))
	if err == nil && n != len(buf) {
		err = unix.EFAULT
	}
	if err != nil {
		return &Error{"write mem", pid, err}
	}
	return nil
}

// Siginfo is the kernel's siginfo_t (128 bytes).
type Siginfo [128]byte

// PeekSiginfo reads up to len(out) queued signals starting at index off,
// from the thread's private queue or, with shared, the process queue.
func (k *Task) PeekSiginfo(off int, shared bool, out []Siginfo) (int, error) {
	if len(out) == 0 {
		return 0, nil
	}
	args := struct {
		Off   uint64
		Flags uint32
		Nr    int32
	}{Off: uint64(off), Nr: int32(len(out))}
	if shared {
		args.Flags = 1 // PTRACE_PEEKSIGINFO_SHARED
	}
	var n int
	err := k.t.Do(func() error {
		r, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_PEEKSIGINFO, uintptr(k.Pid),
			uintptr(unsafe.Pointer(&args)), uintptr(unsafe.Pointer(&out[0])), 0, 0)
		if e != 0 {
			return &Error{"peeksiginfo", k.Pid, e}
		}
		n = int(r)
		return nil
	})
	return n, err
}
