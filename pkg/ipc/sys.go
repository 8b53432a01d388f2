package ipc

import (
	"encoding/binary"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Commands and flags of semctl(2), msgrcv(2) and shmat(2)
// (include/uapi/linux/sem.h, msg.h, shm.h).
const (
	getpid   = 11
	getall   = 13
	setall   = 17
	msgCopy  = 040000 // MSG_COPY
	shmDest  = 01000  // SHM_DEST in shm_perm.mode
	ipcmni   = 32768  // ids are seq*IPCMNI + index (without ipcmni_extend)
	msgidDS  = 120    // sizeof(struct msqid64_ds) on x86-64
	semidDS  = 104    // sizeof(struct semid64_ds) on x86-64
	qbytesAt = 88     // offset of msg_qbytes in struct msqid64_ds

	kcmpSysVSem = 6 // KCMP_SYSVSEM, include/uapi/linux/kcmp.h
)

func semctl(id, num, cmd int, arg unsafe.Pointer) (int, error) {
	r, _, e := unix.Syscall6(unix.SYS_SEMCTL, uintptr(id), uintptr(num), uintptr(cmd), uintptr(arg), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func msgctl(id, cmd int, buf unsafe.Pointer) error {
	_, _, e := unix.Syscall(unix.SYS_MSGCTL, uintptr(id), uintptr(cmd), uintptr(buf))
	if e != 0 {
		return e
	}
	return nil
}

func ipcget(nr uintptr, key int32, a, flags int) (int, error) {
	r, _, e := unix.Syscall(nr, uintptr(key), uintptr(a), uintptr(flags))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// setPerm writes uid, gid and mode into a struct ipc64_perm at the start of
// buf (include/uapi/asm-generic/ipcbuf.h: key, uid, gid, cuid, cgid, mode).
func setPerm(buf []byte, uid, gid, mode uint32) {
	binary.LittleEndian.PutUint32(buf[4:], uid)
	binary.LittleEndian.PutUint32(buf[8:], gid)
	binary.LittleEndian.PutUint32(buf[20:], mode)
}

// rmid removes the object kind id (IPC_RMID).
func rmid(kind string, id int) error {
	var err error
	switch kind {
	case Shm:
		_, err = unix.SysvShmCtl(id, unix.IPC_RMID, nil)
	case Sem:
		_, err = semctl(id, 0, unix.IPC_RMID, nil)
	default:
		err = msgctl(id, unix.IPC_RMID, nil)
	}
	return err
}

// Remove removes the object kind id (IPC_RMID); tests use it to clean up.
func Remove(kind string, id int) error { return rmid(kind, id) }
