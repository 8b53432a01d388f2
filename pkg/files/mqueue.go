package files

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// mqueue: a POSIX message queue (mq_open(3); the fd's link is "/NAME", a
// file of the mqueue filesystem), record image.Mqueue. Only an empty queue
// without a notification registration is saved: its name, mode, owner and
// attributes (mq_getattr: maxmsg, msgsize). Messages cannot be read without
// taking them out of the queue, so a cr killed halfway through would lose
// them: a queue holding messages is refused, naming it. A notification
// registration (mq_notify(3); NOTIFY_PID in the queue's status text,
// ipc/mqueue.c mqueue_read_file) is refused too: the sigev_value it
// delivers is not visible from outside the kernel.
//
// The queue outlives the killed process (until mq_unlink), so at restore it
// usually exists: an existing queue of the name is used if it has the
// image's attributes, mode and owner and is empty; otherwise the restore is
// refused naming it, before anything is made (Check), since reusing it
// would hand the program messages or limits it never had. A queue that no
// longer exists is made (mq_open O_CREAT|O_EXCL, then fchmod and fchown:
// mq_open applies cr's umask). A queue made by a restore that then fails
// is left in place (empty, as at the dump).
type mqueue struct{}

const mqueueMagic = 0x19800202 // MQUEUE_MAGIC, include/uapi/linux/magic.h

// mqAttr is struct mq_attr (include/uapi/linux/mqueue.h).
type mqAttr struct {
	Flags, MaxMsg, MsgSize, CurMsgs int64
	_                               [4]int64
}

func (mqueue) Type() string { return image.FileMqueue }

func (mqueue) Recognize(p *Probe) bool {
	return p.IsPath() && p.Mode() == unix.S_IFREG && fsMagic(p.Link) == mqueueMagic
}

func (mqueue) Dump(p *Probe, f *image.File) error {
	name := p.Target
	if strings.HasSuffix(name, " (deleted)") {
		return &UnsupportedError{Fd: p.Fd, What: "the unlinked POSIX message queue " + strings.TrimSuffix(name, " (deleted)")}
	}
	fd, err := CopyFd(p.Pid, p.Fd)
	if err != nil {
		return fmt.Errorf("fd %d: %w", p.Fd, err)
	}
	defer unix.Close(fd)
	a, err := mqGetattr(fd)
	if err != nil {
		return fmt.Errorf("fd %d: POSIX message queue %s: %w", p.Fd, name, err)
	}
	st, err := p.Stat()
	if err != nil {
		return err
	}
	status, err := os.ReadFile(p.Link) // "QSIZE:... NOTIFY:... SIGNO:... NOTIFY_PID:..."
	if err != nil {
		return fmt.Errorf("fd %d: POSIX message queue %s: read its status: %w", p.Fd, name, err)
	}
	if a.CurMsgs > 0 {
		return &UnsupportedError{Fd: p.Fd, What: fmt.Sprintf("the POSIX message queue %s holding %d message(s) (reading them would take them out of the queue)", name, a.CurMsgs)}
	}
	if pid, sig := mqNotify(string(status)); pid != 0 {
		return &UnsupportedError{Fd: p.Fd, What: fmt.Sprintf("the POSIX message queue %s with a notification registered by pid %d (mq_notify, signal %d: the value it delivers cannot be read)", name, pid, sig)}
	}
	f.Mqueue = &image.Mqueue{Name: name, MaxMsg: a.MaxMsg, MsgSize: a.MsgSize, Uid: st.Uid, Gid: st.Gid}
	return nil
}

func (mqueue) Describe(f *image.File) string {
	if f.Mqueue == nil {
		return f.Ident.Path
	}
	return fmt.Sprintf("POSIX message queue %s (maxmsg %d, msgsize %d)", f.Mqueue.Name, f.Mqueue.MaxMsg, f.Mqueue.MsgSize)
}

// mqNotify reads the registration from a queue's status text: the
// registered pid (0: none) and its signal.
func mqNotify(status string) (pid, sig int) {
	for _, f := range strings.Fields(status) {
		k, v, _ := strings.Cut(f, ":")
		switch k {
		case "NOTIFY_PID":
			pid, _ = strconv.Atoi(v)
		case "SIGNO":
			sig, _ = strconv.Atoi(v)
		}
	}
	return pid, sig
}

func (mqueue) Validate(_ *image.Checkpoint, f *image.File) error {
	if err := need(f.Mqueue != nil, f, "mqueue record"); err != nil {
		return err
	}
	m := f.Mqueue
	n := strings.TrimPrefix(m.Name, "/")
	if len(n) == len(m.Name) || n == "" || len(n) > 255 || strings.Contains(n, "/") || n == "." || n == ".." {
		return fmt.Errorf("POSIX message queue name %q is not /NAME", m.Name)
	}
	if m.MaxMsg <= 0 || m.MsgSize <= 0 {
		return fmt.Errorf("POSIX message queue %s with maxmsg %d and msgsize %d", m.Name, m.MaxMsg, m.MsgSize)
	}
	return nil
}

// Check refuses, before anything is made, a queue of the image's name that
// exists now other than empty and as the image has it.
func (mqueue) Check(_ Env, f *image.File) error {
	fd, err := mqOpen(f.Mqueue.Name, unix.O_RDONLY|unix.O_NONBLOCK, 0, nil)
	if errors.Is(err, unix.ENOENT) {
		return nil // made at restore
	}
	if err != nil {
		return fmt.Errorf("POSIX message queue %s: %w", f.Mqueue.Name, err)
	}
	defer unix.Close(fd)
	return mqSame(fd, f)
}

// mqSame tells, as an error, how the existing queue fd differs from the
// image's f: attributes, mode, owner, or messages in it.
func mqSame(fd int, f *image.File) error {
	m := f.Mqueue
	a, err := mqGetattr(fd)
	if err != nil {
		return fmt.Errorf("POSIX message queue %s: %w", m.Name, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("POSIX message queue %s: %w", m.Name, err)
	}
	var diff []string
	if a.MaxMsg != m.MaxMsg || a.MsgSize != m.MsgSize {
		diff = append(diff, fmt.Sprintf("maxmsg %d and msgsize %d instead of %d and %d", a.MaxMsg, a.MsgSize, m.MaxMsg, m.MsgSize))
	}
	if st.Mode&0o7777 != f.Ident.Mode&0o7777 {
		diff = append(diff, fmt.Sprintf("mode %#o instead of %#o", st.Mode&0o7777, f.Ident.Mode&0o7777))
	}
	if st.Uid != m.Uid || st.Gid != m.Gid {
		diff = append(diff, fmt.Sprintf("owner %d:%d instead of %d:%d", st.Uid, st.Gid, m.Uid, m.Gid))
	}
	if a.CurMsgs > 0 {
		diff = append(diff, fmt.Sprintf("%d message(s) in it", a.CurMsgs))
	}
	if len(diff) > 0 {
		return fmt.Errorf("the POSIX message queue %s exists with %s: remove it (mq_unlink) or restore elsewhere", m.Name, strings.Join(diff, ", "))
	}
	return nil
}

// mqState is what the descriptions of one restore share: the queues made
// or checked already.
type mqState struct{ ready map[string]bool }

func (k mqueue) Open(o *Opener, f *image.File) (int, error) {
	s := stateOf[mqState](o, k)
	if s.ready == nil {
		s.ready = map[string]bool{}
	}
	m := f.Mqueue
	flags := int(f.Flags)&(unix.O_ACCMODE|unix.O_NONBLOCK) | unix.O_CLOEXEC
	if !s.ready[m.Name] {
		attr := mqAttr{MaxMsg: m.MaxMsg, MsgSize: m.MsgSize}
		fd, err := mqOpen(m.Name, flags|unix.O_CREAT|unix.O_EXCL, f.Ident.Mode&0o7777, &attr)
		switch {
		case err == nil:
			err = unix.Fchmod(fd, f.Ident.Mode&0o7777)
			if err == nil {
				err = unix.Fchown(fd, int(m.Uid), int(m.Gid))
			}
			if err != nil {
				unix.Close(fd)
				return 0, fmt.Errorf("POSIX message queue %s: set its mode and owner: %w", m.Name, err)
			}
			s.ready[m.Name] = true
			return fd, nil
		case errors.Is(err, unix.EEXIST):
			// There since the dump (Check found it as the image has it):
			// look again now.
			if fd, err = mqOpen(m.Name, flags, 0, nil); err != nil {
				return 0, fmt.Errorf("POSIX message queue %s: %w", m.Name, err)
			}
			if err := mqSame(fd, f); err != nil {
				unix.Close(fd)
				return 0, err
			}
			s.ready[m.Name] = true
			return fd, nil
		case errors.Is(err, unix.EINVAL):
			return 0, fmt.Errorf("POSIX message queue %s: make it with maxmsg %d and msgsize %d (above /proc/sys/fs/mqueue/msg_max or msgsize_max without CAP_SYS_RESOURCE?): %w", m.Name, m.MaxMsg, m.MsgSize, err)
		default:
			return 0, fmt.Errorf("POSIX message queue %s: make it: %w", m.Name, err)
		}
	}
	fd, err := mqOpen(m.Name, flags, 0, nil)
	if err != nil {
		return 0, fmt.Errorf("POSIX message queue %s: %w", m.Name, err)
	}
	return fd, nil
}

// mqOpen is mq_open(2) of "/NAME" (the syscall takes NAME).
func mqOpen(name string, flags int, mode uint32, attr *mqAttr) (int, error) {
	p, err := unix.BytePtrFromString(strings.TrimPrefix(name, "/"))
	if err != nil {
		return -1, err
	}
	fd, _, e := unix.Syscall6(unix.SYS_MQ_OPEN, uintptr(unsafe.Pointer(p)), uintptr(flags), uintptr(mode), uintptr(unsafe.Pointer(attr)), 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(fd), nil
}

// mqGetattr is mq_getattr(3) (mq_getsetattr(2) without a new value).
func mqGetattr(fd int) (mqAttr, error) {
	var a mqAttr
	if _, _, e := unix.Syscall(unix.SYS_MQ_GETSETATTR, uintptr(fd), 0, uintptr(unsafe.Pointer(&a))); e != 0 {
		return a, fmt.Errorf("mq_getattr: %w", e)
	}
	return a, nil
}
