package ipc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
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

// HasSemUndo tells whether process pid has a SEM_UNDO list (it did a
// semop(2) with SEM_UNDO): kcmp(2) KCMP_SYSVSEM compares its
// sysvsem.undo_list with cr's own, which is empty. The adjustments
// themselves cannot be read from outside the kernel.
func HasSemUndo(pid int) (bool, error) {
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(os.Getpid()), uintptr(pid), kcmpSysVSem, 0, 0, 0)
	if e != 0 {
		return false, fmt.Errorf("kcmp KCMP_SYSVSEM of pid %d: %w", pid, e)
	}
	return r != 0, nil
}

func roundUp(n uint64) uint64 { return (n + image.PageSize - 1) &^ (image.PageSize - 1) }
