package ipc

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/cr-tools/cr/pkg/image"
)

// Object kinds, as the image and the CLI name them.
const (
	Shm = "shm"
	Sem = "sem"
	Msg = "msg"
)

// Object is one line of /proc/sysvipc/shm, sem or msg (ipc/shm.c
// sysvipc_shm_proc_show and friends).
type Object struct {
	Kind string
	image.IPCPerm
	Size   uint64 // shm: shm_segsz, bytes
	Nattch uint64 // shm: attachments
	Cpid   int    // shm: creator
	Lpid   int    // shm: last shmat/shmdt
	Nsems  int    // sem
	Qnum   uint64 // msg: messages
	Cbytes uint64 // msg: bytes of all messages
	Lspid  int    // msg: last msgsnd
	Lrpid  int    // msg: last msgrcv
}

// Describe names the object for messages: "SysV shared memory segment
// (key 0x00001234, shmid 5)".
func (o *Object) Describe() string { return Describe(o.Kind, o.Key, o.ID) }

// Describe names an object of kind with key and id for messages.
func Describe(kind string, key int32, id int) string {
	switch kind {
	case Shm:
		return fmt.Sprintf("SysV shared memory segment (key %#08x, shmid %d)", uint32(key), id)
	case Sem:
		return fmt.Sprintf("SysV semaphore set (key %#08x, semid %d)", uint32(key), id)
	}
	return fmt.Sprintf("SysV message queue (key %#08x, msqid %d)", uint32(key), id)
}

// List reads every object of kind (Shm, Sem, Msg) in cr's IPC namespace.
func List(kind string) ([]Object, error) {
	data, err := os.ReadFile("/proc/sysvipc/" + kind)
	if err != nil {
		return nil, fmt.Errorf("list SysV IPC objects: %w", err)
	}
	return parse(kind, data)
}

func parse(kind string, data []byte) ([]Object, error) {
	s := bufio.NewScanner(bytes.NewReader(data))
	var cols []string
	var out []Object
	for s.Scan() {
		f := strings.Fields(s.Text())
		if cols == nil {
			cols = f
			continue
		}
		if len(f) == 0 {
			continue
		}
		if len(f) < len(cols) {
			return nil, fmt.Errorf("/proc/sysvipc/%s: malformed line %q", kind, s.Text())
		}
		o := Object{Kind: kind}
		for i, c := range cols {
			v := f[i]
			var err error
			num := func(base int) int64 {
				var n int64
				n, err = strconv.ParseInt(v, base, 64)
				return n
			}
			unum := func() uint64 {
				var n uint64
				n, err = strconv.ParseUint(v, 10, 64)
				return n
			}
			switch c {
			case "key":
				o.Key = int32(num(10))
			case "shmid", "semid", "msqid":
				o.ID = int(num(10))
			case "perms":
				o.Mode = uint32(num(8))
			case "uid":
				o.UID = uint32(unum())
			case "gid":
				o.GID = uint32(unum())
			case "cuid":
				o.CUID = uint32(unum())
			case "cgid":
				o.CGID = uint32(unum())
			case "size":
				o.Size = unum()
			case "nattch":
				o.Nattch = unum()
			case "cpid":
				o.Cpid = int(num(10))
			case "lpid":
				o.Lpid = int(num(10))
			case "nsems":
				o.Nsems = int(num(10))
			case "qnum":
				o.Qnum = unum()
			case "cbytes":
				o.Cbytes = unum()
			case "lspid":
				o.Lspid = int(num(10))
			case "lrpid":
				o.Lrpid = int(num(10))
			}
			if err != nil {
				return nil, fmt.Errorf("/proc/sysvipc/%s: field %s of %q: %w", kind, c, s.Text(), err)
			}
		}
		out = append(out, o)
	}
	return out, s.Err()
}
