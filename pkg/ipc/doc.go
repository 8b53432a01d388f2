// Package ipc saves and recreates SysV IPC objects: shared memory
// segments, semaphore sets and message queues (svipc(7)).
//
// It reads the objects of cr's IPC namespace from /proc/sysvipc/{shm,sem,msg}
// and with the syscalls themselves: a segment's contents through a
// read-only attachment in cr (shmat(2) SHM_RDONLY, as CRIU's
// criu/ipc_ns.c does), a semaphore set's values with semctl(2) GETALL, a
// queue's messages with msgrcv(2) MSG_COPY, which copies a message
// without removing it (needs CONFIG_CHECKPOINT_RESTORE).
//
// Restore recreates each object with its id: the kernel takes the next
// id from /proc/sys/kernel/{shm,sem,msg}_next_id (CAP_CHECKPOINT_RESTORE or
// CAP_SYS_ADMIN; ipc/util.c ipc_idr_alloc), and the creator's uid and gid
// (cuid, cgid) from the creating thread's effective ids, so objects are
// created by a thread of cr that takes those ids and then ends. Owner and
// mode are set with IPC_SET. Attaching a segment into a restored process is
// pkg/restore's work (an injected shmat at the dumped address).
//
// Errors name the object by kind, key and id. An object of the namespace
// in the way of one of the image is an *InTheWayError.
package ipc
