package files

import (
	"errors"
	"fmt"
	"os"
	"sort"

	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// gatherer is a kind whose descriptions bring more descriptions into the
// collection before the Resolvers run: a unix socket's queued SCM_RIGHTS
// messages carry open file descriptions that perhaps no process holds
// (descriptors in flight). gather gets the ids of the kind's descriptions
// it has not seen yet; it adds what it finds with addInFlight, and is
// called again for the new ones until nothing is added.
type gatherer interface {
	gather(c *Collector, ids []int) error
}

// gather runs every gatherer kind until the collection stops growing.
func (c *Collector) gather() error {
	done := map[int]bool{}
	for {
		grew := false
		for _, k := range kinds {
			g, ok := k.(gatherer)
			if !ok {
				continue
			}
			var ids []int
			for i := range c.Files {
				if c.Files[i].Type == k.Type() && !done[c.Files[i].ID] {
					ids = append(ids, c.Files[i].ID)
					done[c.Files[i].ID] = true
				}
			}
			if len(ids) == 0 {
				continue
			}
			grew = true
			if err := g.gather(c, ids); err != nil {
				return err
			}
		}
		if !grew {
			return nil
		}
	}
}

// file returns the description id of the collection (nil if none). Ids
// grow with the Files slice, so a binary search finds it; the pointer is
// valid until the next description is added.
func (c *Collector) file(id int) *image.File {
	i := sort.Search(len(c.Files), func(i int) bool { return c.Files[i].ID >= id })
	if i < len(c.Files) && c.Files[i].ID == id {
		return &c.Files[i]
	}
	return nil
}

// addInFlight collects the open file description of cr's own descriptor
// fd, a copy of a descriptor in flight (received with MSG_PEEK from a
// queued SCM_RIGHTS message). The description is stored once, like any
// (kcmp: it may also be held by a process of the tree); its owner is cr
// itself until Finish ends, which closes the copy. It returns the
// description's id, or the refusal of its kind (an *UnsupportedError
// naming cr's fd: the caller names the socket instead).
func (c *Collector) addInFlight(fd int) (int, error) {
	pid := os.Getpid()
	e, err := readOne(pid, fd, c.allowTTY, c.GhostLimit, c.TCP, c.FileLocks)
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	e.File.Ident.Proc = nil // not a path of a process of the tree
	if e.File.Type == "" {
		unix.Close(fd)
		return -1, fmt.Errorf("descriptor in flight: no kind")
	}
	k := [2]uint64{e.File.Ident.Dev, e.File.Ident.Ino}
	id, err := c.lookup(k, pid, fd)
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	if id >= 0 {
		unix.Close(fd)
		return id, nil
	}
	id = c.nextID
	c.nextID++
	e.File.ID = id
	c.owner[id] = ref{pid, fd}
	c.Files = append(c.Files, e.File)
	c.insert(k, len(c.Files)-1)
	c.inflight = append(c.inflight, fd)
	return id, nil
}

// closeInFlight closes cr's copies of the descriptors in flight.
func (c *Collector) closeInFlight() {
	for _, fd := range c.inflight {
		unix.Close(fd)
	}
	c.inflight = nil
}

// gather reads the receive queue of every unix socket (but listeners'),
// with the descriptors in flight its messages carry.
func (unixSocket) gather(c *Collector, ids []int) error {
	for _, id := range ids {
		pid, fd := c.Owner(id)
		s, err := CopyFd(pid, fd)
		if err != nil {
			return err
		}
		data, rights, err := peekMessages(s)
		unix.Close(s)
		if err != nil {
			return fmt.Errorf("fd %d of pid %d: read queued messages: %w", fd, pid, err)
		}
		var fileIDs [][]int
		for i, fds := range rights {
			for j, rfd := range fds {
				fid, err := c.addInFlight(rfd)
				if err != nil {
					for _, rest := range fds[j+1:] {
						unix.Close(rest)
					}
					for _, later := range rights[i+1:] {
						for _, rest := range later {
							unix.Close(rest)
						}
					}
					var ue *UnsupportedError
					if errors.As(err, &ue) {
						c.Refuse(&UnsupportedError{Pid: pid, Fd: fd, What: "a unix socket whose queue carries " + ue.What + " in flight (SCM_RIGHTS)"})
						goto next
					}
					return fmt.Errorf("fd %d of pid %d: descriptor in flight: %w", fd, pid, err)
				}
				for len(fileIDs) <= i {
					fileIDs = append(fileIDs, nil)
				}
				fileIDs[i] = append(fileIDs[i], fid)
			}
		}
		if f := c.file(id); f != nil {
			f.Unix.Queue, f.Unix.QueueFds = data, fileIDs
		}
	next:
	}
	return nil
}

// peekMessages reads the messages waiting in a unix socket's receive queue
// without taking them: MSG_PEEK, stepping with SO_PEEK_OFF (put back as it
// was afterwards). Each message comes with the descriptors its SCM_RIGHTS
// part carries, received into cr (close-on-exec). A stream's queue comes
// in chunks that end where descriptors were attached.
func peekMessages(s int) (data [][]byte, rights [][]int, err error) {
	if v, err := unix.GetsockoptInt(s, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err == nil && v != 0 {
		return nil, nil, nil // a listener has no queue of its own
	}
	typ, err := unix.GetsockoptInt(s, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, nil, err
	}
	old, err := unix.GetsockoptInt(s, unix.SOL_SOCKET, unix.SO_PEEK_OFF)
	if err != nil {
		return nil, nil, err
	}
	if err := unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0); err != nil {
		return nil, nil, err
	}
	defer unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_PEEK_OFF, old)
	defer func() {
		if err != nil {
			for _, fds := range rights {
				for _, fd := range fds {
					unix.Close(fd)
				}
			}
			data, rights = nil, nil
		}
	}()
	buf := make([]byte, 1<<20)
	oob := make([]byte, unix.CmsgSpace(4*253)+unix.CmsgSpace(64)+unix.CmsgSpace(4096))
	for i := 0; i < maxQueuedMessages; i++ {
		n, oobn, flags, _, err := unix.Recvmsg(s, buf, oob, unix.MSG_PEEK|unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
		if errors.Is(err, unix.EAGAIN) {
			return data, rights, nil
		}
		if err != nil {
			return data, rights, err
		}
		var fds []int
		if oobn > 0 {
			cms, err := unix.ParseSocketControlMessage(oob[:oobn])
			if err != nil {
				return data, rights, err
			}
			for _, cm := range cms {
				if cm.Header.Level == unix.SOL_SOCKET && cm.Header.Type == unix.SCM_RIGHTS {
					r, err := unix.ParseUnixRights(&cm)
					if err != nil {
						return data, rights, err
					}
					fds = append(fds, r...)
				}
			}
		}
		if flags&unix.MSG_CTRUNC != 0 {
			return data, append(rights, fds), errors.New("a queued message carries more descriptors than cr can receive")
		}
		if n == 0 && len(fds) == 0 && typ != unix.SOCK_DGRAM {
			return data, rights, nil // end of stream
		}
		if flags&unix.MSG_TRUNC != 0 {
			return data, append(rights, fds), fmt.Errorf("a queued message is larger than %d bytes", len(buf))
		}
		data = append(data, append([]byte(nil), buf[:n]...))
		rights = append(rights, fds)
	}
	return data, rights, fmt.Errorf("more than %d messages queued", maxQueuedMessages)
}

// maxQueuedMessages bounds the messages read of one socket's queue.
const maxQueuedMessages = 1 << 16
