package ipc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// DumpShm saves segment o: its identity and the ranges of its contents
// that hold data, read through a read-only attachment in cr (shm_atime
// and shm_lpid of the segment change, as with CRIU). Holes are found with
// SEEK_DATA/SEEK_HOLE on the attachment's map_files link, so that reading
// does not fill them.
func DumpShm(o *Object, w *image.PagesWriter) (image.SysVShm, error) {
	sh := image.SysVShm{IPCPerm: o.IPCPerm, Size: o.Size, Removed: o.Mode&shmDest != 0}
	sh.Mode &= 0777
	mem, err := unix.SysvShmAttach(o.ID, 0, unix.SHM_RDONLY)
	if err != nil {
		return sh, fmt.Errorf("attach %s to read it: %w", o.Describe(), err)
	}
	defer unix.SysvShmDetach(mem)
	// The attachment covers whole pages; mem is only Size bytes long.
	full := unsafe.Slice(unsafe.SliceData(mem), roundUp(o.Size))
	start := uintptr(unsafe.Pointer(unsafe.SliceData(mem)))
	end := start + uintptr(len(full))
	f, err := os.Open(fmt.Sprintf("/proc/self/map_files/%x-%x", start, end))
	if err != nil {
		return sh, fmt.Errorf("read %s: %w", o.Describe(), err)
	}
	defer f.Close()
	size := int64(o.Size)
	for off := int64(0); off < size; {
		data, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			return sh, fmt.Errorf("read %s: %w", o.Describe(), err)
		}
		hole, err := unix.Seek(int(f.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return sh, fmt.Errorf("read %s: %w", o.Describe(), err)
		}
		data &^= image.PageSize - 1
		hole = min(int64(roundUp(uint64(hole))), int64(roundUp(o.Size)))
		if hole <= data {
			break
		}
		run := image.PageRun{Addr: uint64(data), Offset: uint64(w.Offset()), Pages: uint64(hole-data) / image.PageSize}
		page := full[data:hole]
		run.CRC = image.UpdateCRC(0, page)
		if err := w.Write(page); err != nil {
			return sh, err
		}
		sh.Runs = append(sh.Runs, run)
		off = hole
	}
	return sh, nil
}

// DumpSem saves semaphore set o: its identity and values (GETALL).
func DumpSem(o *Object) (image.SysVSem, error) {
	s := image.SysVSem{IPCPerm: o.IPCPerm, Values: make([]uint16, o.Nsems)}
	s.Mode &= 0777
	if o.Nsems == 0 {
		return s, fmt.Errorf("%s has no semaphores", o.Describe())
	}
	if _, err := semctl(o.ID, 0, getall, unsafe.Pointer(&s.Values[0])); err != nil {
		return s, fmt.Errorf("read %s: %w", o.Describe(), err)
	}
	return s, nil
}

// LastPids returns, for each semaphore of set o, the pid of the last
// process that changed it (GETPID; sempid).
func LastPids(o *Object) ([]int, error) {
	out := make([]int, o.Nsems)
	for i := range out {
		pid, err := semctl(o.ID, i, getpid, nil)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", o.Describe(), err)
		}
		out[i] = pid
	}
	return out, nil
}

// DumpMsg saves message queue o: its identity, byte limit and every
// message, in order, read with msgrcv MSG_COPY (which leaves it queued).
func DumpMsg(o *Object) (image.SysVMsg, error) {
	q := image.SysVMsg{IPCPerm: o.IPCPerm}
	q.Mode &= 0777
	ds := make([]byte, msgidDS)
	if err := msgctl(o.ID, unix.IPC_STAT, unsafe.Pointer(&ds[0])); err != nil {
		return q, fmt.Errorf("read %s: %w", o.Describe(), err)
	}
	q.QBytes = binary.LittleEndian.Uint64(ds[qbytesAt:])
	// MSG_COPY copies at most msgmax bytes (ipc/msg.c do_msgrcv); a message
	// is never longer than the queue's bytes.
	buf := make([]byte, 8+max(o.Cbytes, 8192)+1)
	for i := uint64(0); i < o.Qnum; i++ {
		r, _, e := unix.Syscall6(unix.SYS_MSGRCV, uintptr(o.ID), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)-8),
			uintptr(i), unix.IPC_NOWAIT|msgCopy, 0)
		if e != 0 {
			if e == unix.ENOSYS {
				return q, fmt.Errorf("read %s: msgrcv MSG_COPY is not supported by this kernel (CONFIG_CHECKPOINT_RESTORE): %w", o.Describe(), e)
			}
			return q, fmt.Errorf("read message %d of %s: %w", i, o.Describe(), e)
		}
		q.Messages = append(q.Messages, image.SysVMessage{
			Type: int64(binary.LittleEndian.Uint64(buf)),
			Data: append([]byte(nil), buf[8:8+r]...),
		})
	}
	return q, nil
}

// HasSemUndo tells, for each of pids, whether the process has a SEM_UNDO
// list: kcmp(2) KCMP_SYSVSEM compares its sysvsem.undo_list with that of a
// process known to have none. The kernel gives a task a list at its first
// semop(2) with SEM_UNDO, and also to every thread made with CLONE_SYSVSEM
// (pthread_create and the Go runtime do), so a multi-threaded process has
// one even if it never used SEM_UNDO (ipc/sem.c copy_semundo); cr itself is
// such a process, so it cannot be the reference. The reference is a zombie:
// exit_sem sets a dying task's list to NULL, and kcmp still finds a zombie.
// cr starts a tiny static program that exits at once, compares, and reaps
// it. The adjustments themselves cannot be read from outside the kernel.
func HasSemUndo(pids []int) (map[int]bool, error) {
	ref, err := startZombie()
	if err != nil {
		return nil, fmt.Errorf("start the SEM_UNDO reference process: %w", err)
	}
	defer func() {
		var ws unix.WaitStatus
		for {
			if _, err := unix.Wait4(ref, &ws, 0, nil); err != unix.EINTR {
				return
			}
		}
	}()
	has := make(map[int]bool, len(pids))
	for _, pid := range pids {
		r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(ref), uintptr(pid), kcmpSysVSem, 0, 0, 0)
		if e != 0 {
			return nil, fmt.Errorf("kcmp KCMP_SYSVSEM of pid %d: %w", pid, e)
		}
		has[pid] = r != 0
	}
	return has, nil
}

// zombieCode is `mov $60, %eax; xor %edi, %edi; syscall`: exit(0).
var zombieCode = []byte{0xb8, 0x3c, 0x00, 0x00, 0x00, 0x31, 0xff, 0x0f, 0x05}

// startZombie runs a static ELF64 program (from a memfd) that exits at
// once, and waits until it has exited without reaping it (waitid WNOWAIT):
// its pid names a zombie until the caller reaps it.
func startZombie() (int, error) {
	const base, codeOff = 0x10000000, 0x78 // the code right after the ELF header and one program header
	b := make([]byte, codeOff+len(zombieCode))
	le := binary.LittleEndian
	copy(b, []byte{0x7f, 'E', 'L', 'F', 2, 1, 1, 0}) // ELFCLASS64, little-endian, version 1, System V
	le.PutUint16(b[16:], 2)                          // e_type ET_EXEC
	le.PutUint16(b[18:], 62)                         // e_machine EM_X86_64
	le.PutUint32(b[20:], 1)                          // e_version
	le.PutUint64(b[24:], base+codeOff)               // e_entry
	le.PutUint64(b[32:], 64)                         // e_phoff
	le.PutUint16(b[52:], 64)                         // e_ehsize
	le.PutUint16(b[54:], 56)                         // e_phentsize
	le.PutUint16(b[56:], 1)                          // e_phnum
	ph := b[64:]
	le.PutUint32(ph[0:], 1)               // PT_LOAD
	le.PutUint32(ph[4:], 5)               // PF_R|PF_X
	le.PutUint64(ph[16:], base)           // p_vaddr
	le.PutUint64(ph[24:], base)           // p_paddr
	le.PutUint64(ph[32:], uint64(len(b))) // p_filesz
	le.PutUint64(ph[40:], uint64(len(b))) // p_memsz
	le.PutUint64(ph[48:], 0x1000)         // p_align
	copy(b[codeOff:], zombieCode)
	fd, err := unix.MemfdCreate("cr-semundo-ref", unix.MFD_CLOEXEC)
	if err != nil {
		return 0, fmt.Errorf("memfd_create: %w", err)
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, b); err != nil {
		return 0, fmt.Errorf("write the program: %w", err)
	}
	path := fmt.Sprintf("/proc/self/fd/%d", fd)
	pid, err := syscall.ForkExec(path, []string{"cr-semundo-ref"}, &syscall.ProcAttr{Env: []string{}})
	if err != nil {
		return 0, fmt.Errorf("exec: %w", err)
	}
	var info unix.Siginfo
	for {
		err = unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		unix.Kill(pid, unix.SIGKILL)
		var ws unix.WaitStatus
		unix.Wait4(pid, &ws, 0, nil)
		return 0, fmt.Errorf("wait for pid %d: %w", pid, err)
	}
	return pid, nil
}

func roundUp(n uint64) uint64 { return (n + image.PageSize - 1) &^ (image.PageSize - 1) }
