package ipc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"unsafe"

	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// InTheWayError says an object of the IPC namespace keeps an object of the
// image from being recreated with its key and id.
type InTheWayError struct {
	Kind string
	Key  int32 // the image object's
	ID   int
	Why  string
}

func (e *InTheWayError) Error() string {
	return fmt.Sprintf("%s of the image cannot be recreated: %s", Describe(e.Kind, e.Key, e.ID), e.Why)
}

// Plan checks, before anything is created, that every object of s can be
// recreated with its id and key, and returns the objects of the namespace
// that the restore replaces: those of the same kind, key and id that
// nothing attaches (a segment with shm_nattch 0: the dumped processes'
// own segment, which outlived them; a semaphore set or message queue has
// no attachments, so one with the same key and id is always taken to be
// the dumped one). Any other object holding the key, the id or its slot is
// an *InTheWayError naming both.
func Plan(s *image.SysVIPC) ([]Object, error) {
	if s.Empty() {
		return nil, nil
	}
	var replace []Object
	lists := map[string][]Object{}
	check := func(kind string, p image.IPCPerm) error {
		objs, ok := lists[kind]
		if !ok {
			var err error
			if objs, err = List(kind); err != nil {
				return err
			}
			lists[kind] = objs
		}
		for _, e := range objs {
			sameSlot := e.ID%ipcmni == p.ID%ipcmni
			sameKey := p.Key != 0 && e.Key == p.Key
			if !sameSlot && !sameKey {
				continue
			}
			var why string
			switch {
			case e.ID == p.ID && e.Key == p.Key && (kind != Shm || e.Nattch == 0):
				replace = append(replace, e)
				continue
			case e.ID == p.ID && e.Key == p.Key:
				why = fmt.Sprintf("it still exists and %d process(es) attach it (creator pid %d, last pid %d); end them, or restore elsewhere", e.Nattch, e.Cpid, e.Lpid)
			case e.ID == p.ID:
				why = fmt.Sprintf("another object, key %#08x, holds id %d", uint32(e.Key), e.ID)
			case sameKey:
				why = fmt.Sprintf("another object, id %d, holds key %#08x", e.ID, uint32(e.Key))
			default:
				why = fmt.Sprintf("another object, key %#08x id %d, holds its slot (id %% %d)", uint32(e.Key), e.ID, ipcmni)
			}
			return &InTheWayError{Kind: kind, Key: p.Key, ID: p.ID, Why: why}
		}
		return nil
	}
	for _, o := range s.Shm {
		if err := check(Shm, o.IPCPerm); err != nil {
			return nil, err
		}
	}
	for _, o := range s.Sem {
		if err := check(Sem, o.IPCPerm); err != nil {
			return nil, err
		}
	}
	for _, o := range s.Msg {
		if err := check(Msg, o.IPCPerm); err != nil {
			return nil, err
		}
	}
	return replace, nil
}

// Created is the set of objects Create made.
type Created struct {
	made    []made
	removed []int // shmids to IPC_RMID once attached (SHM_DEST at the dump)
}

type made struct {
	kind string
	id   int
}

// Undo removes every object Create made (a failed restore).
func (c *Created) Undo() {
	if c == nil {
		return
	}
	for _, m := range c.made {
		rmid(m.kind, m.id)
	}
	c.made = nil
}

// Finish marks for removal the segments that were marked at the dump;
// call it once every attachment exists (the kernel then frees each one
// with its last detach).
func (c *Created) Finish() error {
	if c == nil {
		return nil
	}
	for _, id := range c.removed {
		if err := rmid(Shm, id); err != nil {
			return fmt.Errorf("mark SysV shared memory segment %d for removal: %w", id, err)
		}
	}
	return nil
}

// Create removes the objects Plan said to replace, then makes every object
// of s with its key, id, creator, owner, mode and contents; segments'
// contents come from sysv-shm-pages.img in dir. On error whatever it made
// is removed again.
func Create(dir string, s *image.SysVIPC, replace []Object) (_ *Created, err error) {
	c := &Created{}
	if s.Empty() {
		return c, nil
	}
	defer func() {
		if err != nil {
			c.Undo()
		}
	}()
	for _, o := range replace {
		if err := rmid(o.Kind, o.ID); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.EIDRM) {
			return nil, fmt.Errorf("replace %s: %w", o.Describe(), err)
		}
	}
	var pages *os.File
	if len(s.Shm) > 0 {
		if pages, err = image.OpenPagesNamed(dir, image.SysVShmPagesFile); err != nil {
			return nil, err
		}
		defer pages.Close()
	}
	for i := range s.Shm {
		sh := &s.Shm[i]
		if err := c.create(Shm, sh.IPCPerm, unix.SYS_SHMGET, int(sh.Size)); err != nil {
			return nil, err
		}
		if err := fillShm(sh, pages); err != nil {
			return nil, err
		}
		desc := unix.SysvShmDesc{Perm: unix.SysvIpcPerm{Uid: sh.UID, Gid: sh.GID, Mode: sh.Mode & 0777}}
		if _, err := unix.SysvShmCtl(sh.ID, unix.IPC_SET, &desc); err != nil {
			return nil, fmt.Errorf("set owner and mode of %s: %w", Describe(Shm, sh.Key, sh.ID), err)
		}
		if sh.Removed {
			c.removed = append(c.removed, sh.ID)
		}
	}
	for i := range s.Sem {
		sm := &s.Sem[i]
		if err := c.create(Sem, sm.IPCPerm, unix.SYS_SEMGET, len(sm.Values)); err != nil {
			return nil, err
		}
		if _, err := semctl(sm.ID, 0, setall, unsafe.Pointer(&sm.Values[0])); err != nil {
			return nil, fmt.Errorf("set the values of %s: %w", Describe(Sem, sm.Key, sm.ID), err)
		}
		ds := make([]byte, semidDS)
		setPerm(ds, sm.UID, sm.GID, sm.Mode&0777)
		if _, err := semctl(sm.ID, 0, unix.IPC_SET, unsafe.Pointer(&ds[0])); err != nil {
			return nil, fmt.Errorf("set owner and mode of %s: %w", Describe(Sem, sm.Key, sm.ID), err)
		}
	}
	for i := range s.Msg {
		q := &s.Msg[i]
		if err := c.create(Msg, q.IPCPerm, unix.SYS_MSGGET, 0); err != nil {
			return nil, err
		}
		if err := fillMsg(q); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// create makes one object with get (shmget, semget, msgget; arg is the
// size or the number of semaphores) and checks it got the image's id.
func (c *Created) create(kind string, p image.IPCPerm, get uintptr, arg int) error {
	what := Describe(kind, p.Key, p.ID)
	id, err := asCreator(kind, p, func() (int, error) {
		if get == unix.SYS_MSGGET {
			return ipcget(get, p.Key, unix.IPC_CREAT|unix.IPC_EXCL|0o600, 0)
		}
		return ipcget(get, p.Key, arg, unix.IPC_CREAT|unix.IPC_EXCL|0o600)
	})
	if err != nil {
		setNextID(kind, -1) // not used: nobody else may get the id
		return fmt.Errorf("create %s: %w", what, err)
	}
	c.made = append(c.made, made{kind, id})
	if id != p.ID {
		return fmt.Errorf("create %s: the kernel gave id %d (another process made an object meanwhile?)", what, id)
	}
	return nil
}

// setNextID sets the id the next object of kind gets (-1: the lowest free).
func setNextID(kind string, id int) error {
	name := "/proc/sys/kernel/" + kind + "_next_id"
	if err := os.WriteFile(name, []byte(strconv.Itoa(id)), 0); err != nil {
		return fmt.Errorf("choose the id: %w", err)
	}
	return nil
}

// asCreator chooses p's id as the next one of kind, then runs get on a
// thread of its own whose effective ids are p's creator's (the kernel
// records them as cuid and cgid, ipc/util.c ipc_addid). The thread then
// ends, since its credentials are no longer cr's. The id is chosen first:
// a thread with another euid has lost the capability to choose it.
func asCreator(kind string, p image.IPCPerm, get func() (int, error)) (int, error) {
	type result struct {
		id  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		id, err := func() (int, error) {
			if err := setNextID(kind, p.ID); err != nil {
				return 0, err
			}
			// Raw syscalls change this thread only (Go's Setresuid
			// changes every thread of the process).
			if p.CGID != 0 {
				if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, ^uintptr(0), uintptr(p.CGID), ^uintptr(0)); e != 0 {
					return 0, fmt.Errorf("take the creator's gid %d: %w", p.CGID, e)
				}
			}
			if p.CUID != 0 {
				if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), uintptr(p.CUID), ^uintptr(0)); e != 0 {
					return 0, fmt.Errorf("take the creator's uid %d: %w", p.CUID, e)
				}
			}
			return get()
		}()
		ch <- result{id, err}
	}()
	r := <-ch
	return r.id, r.err
}

// fillShm copies the segment's saved contents into it through an
// attachment in cr.
func fillShm(sh *image.SysVShm, pages *os.File) error {
	if len(sh.Runs) == 0 {
		return nil
	}
	mem, err := unix.SysvShmAttach(sh.ID, 0, 0)
	if err != nil {
		return fmt.Errorf("attach %s to fill it: %w", Describe(Shm, sh.Key, sh.ID), err)
	}
	defer unix.SysvShmDetach(mem)
	full := unsafe.Slice(unsafe.SliceData(mem), roundUp(sh.Size))
	for _, r := range sh.Runs {
		n := r.Pages * image.PageSize
		if r.Addr+n > uint64(len(full)) {
			return fmt.Errorf("%s: a saved run %#x+%d pages lies outside it", Describe(Shm, sh.Key, sh.ID), r.Addr, r.Pages)
		}
		if _, err := pages.ReadAt(full[r.Addr:r.Addr+n], int64(r.Offset)); err != nil {
			return fmt.Errorf("fill %s: %w", Describe(Shm, sh.Key, sh.ID), err)
		}
	}
	return nil
}

// fillMsg queues the saved messages in order, then sets the byte limit,
// owner and mode. The limit is raised first if the messages need it (and
// lowered after): raising it above msgmnb needs CAP_SYS_RESOURCE.
func fillMsg(q *image.SysVMsg) error {
	what := Describe(Msg, q.Key, q.ID)
	ds := make([]byte, msgidDS)
	if err := msgctl(q.ID, unix.IPC_STAT, unsafe.Pointer(&ds[0])); err != nil {
		return fmt.Errorf("read %s: %w", what, err)
	}
	var total uint64
	for _, m := range q.Messages {
		total += uint64(len(m.Data))
	}
	setLimit := func(limit uint64, uid, gid, mode uint32) error {
		setPerm(ds, uid, gid, mode)
		binary.LittleEndian.PutUint64(ds[qbytesAt:], limit)
		if err := msgctl(q.ID, unix.IPC_SET, unsafe.Pointer(&ds[0])); err != nil {
			if errors.Is(err, unix.EPERM) {
				return fmt.Errorf("set the byte limit of %s to %d: above msgmnb, which needs CAP_SYS_RESOURCE: %w", what, limit, err)
			}
			return fmt.Errorf("set the byte limit, owner and mode of %s: %w", what, err)
		}
		return nil
	}
	if cur := binary.LittleEndian.Uint64(ds[qbytesAt:]); total > cur {
		if err := setLimit(total, 0, 0, 0o600); err != nil {
			return err
		}
	}
	buf := make([]byte, 8)
	for i, m := range q.Messages {
		buf = append(buf[:8], m.Data...)
		binary.LittleEndian.PutUint64(buf, uint64(m.Type))
		_, _, e := unix.Syscall6(unix.SYS_MSGSND, uintptr(q.ID), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(m.Data)), unix.IPC_NOWAIT, 0, 0)
		if e != 0 {
			return fmt.Errorf("queue message %d (type %d, %d bytes) of %s: %w", i, m.Type, len(m.Data), what, e)
		}
	}
	return setLimit(q.QBytes, q.UID, q.GID, q.Mode&0777)
}
