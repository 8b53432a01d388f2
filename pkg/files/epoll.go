package files

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unsafe"

	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// epoll: an epoll instance ("anon_inode:[eventpoll]"), record
// image.File.Epoll: its interest list from fdinfo ("tfd: %8d events: %8x
// data: %16llx pos:%lli ino:%lx sdev:%x", fs/eventpoll.c), each target
// mapped at the end of the collection to an fd of the process that holds
// the watched file (kcmp KCMP_EPOLL_TFD). Restore makes it inside the first
// process holding it (epoll_create1 injected: InTask) and fills the
// interest list once every fd of that process is in place (Fix); other
// processes get the instance from cr.
type epoll struct{}

func (epoll) Type() string { return image.FileEpoll }

func (epoll) Recognize(p *Probe) bool { return p.Target == "anon_inode:[eventpoll]" }

func (epoll) Dump(p *Probe, f *image.File) error {
	for _, line := range strings.Split(p.Info, "\n") {
		if !strings.HasPrefix(line, "tfd:") {
			continue
		}
		fl := strings.Fields(line)
		if len(fl) < 6 {
			return fmt.Errorf("fd %d: malformed epoll fdinfo line %q", p.Fd, line)
		}
		tfd, _ := strconv.Atoi(fl[1])
		ev, _ := strconv.ParseUint(fl[3], 16, 32)
		data, _ := strconv.ParseUint(fl[5], 16, 64)
		f.Epoll = append(f.Epoll, image.EpollTarget{Fd: tfd, Events: uint32(ev), Data: data})
	}
	return nil
}

// Resolve maps every watched target to an fd of the epoll's process that
// holds the watched file (kcmp KCMP_EPOLL_TFD): the fd number an entry was
// registered with may since have been closed or reused.
func (epoll) Resolve(c *Collector, files []*image.File) error {
	for _, f := range files {
		pid, epfd := c.Owner(f.ID)
		for j := range f.Epoll {
			tgt := &f.Epoll[j]
			found := -1
			candidates := []int{tgt.Fd}
			for _, fd := range c.Fds(pid) {
				candidates = append(candidates, fd.Fd)
			}
			for _, fd := range candidates {
				same, err := sameEpollTarget(pid, fd, epfd, tgt.Fd)
				if err == nil && same {
					found = fd
					break
				}
			}
			if found < 0 {
				c.Refuse(&UnsupportedError{Pid: pid, Fd: epfd, What: fmt.Sprintf("an epoll instance watching a file that is no longer open (registered as fd %d)", tgt.Fd)})
				continue
			}
			tgt.Fd = found
			if Disarmed(tgt.Events) {
				// Restore brings it back disarmed by letting it fire once,
				// which needs its file ready for some event.
				ready, err := readyEvents(pid, found)
				if err != nil {
					return fmt.Errorf("fd %d of pid %d: poll: %w", found, pid, err)
				}
				if ready == 0 {
					c.Refuse(&UnsupportedError{Pid: pid, Fd: epfd, What: fmt.Sprintf("an epoll instance with a one-shot entry for fd %d that has fired (disarmed) while its file is ready for no event: cr can bring such an entry back only when its file is ready", found)})
				}
			}
		}
	}
	return nil
}

func (epoll) Validate(_ *image.Checkpoint, f *image.File) error {
	for _, t := range f.Epoll {
		if t.Fd < 0 {
			return fmt.Errorf("epoll entry for fd %d", t.Fd)
		}
	}
	return nil
}

// Call makes the instance in the task: epoll_create1(2).
func (epoll) Call(_ *image.File, cloexec bool) (uintptr, []uintptr) {
	flags := uintptr(0)
	if cloexec {
		flags = unix.EPOLL_CLOEXEC
	}
	return unix.SYS_EPOLL_CREATE1, []uintptr{flags}
}

// Open is never needed: the instance is made in the first process holding
// it (Call), and cr copies it from there for the others.
func (epoll) Open(_ *Opener, f *image.File) (int, error) {
	return 0, errors.New("an epoll instance is made in its first process, not by cr")
}

// Fix fills the interest lists of the epoll instances made in this process
// (every fd in place).
//
// An EPOLLONESHOT entry that had fired (Disarmed) must come back disarmed,
// but EPOLL_CTL_ADD and _MOD always add EPOLLERR|EPOLLHUP (do_epoll_ctl,
// fs/eventpoll.c): it would report a hang-up. So it is added first, alone,
// with the events its file is ready for now, and made to fire once by an
// injected epoll_wait, which leaves it with only its private bits
// (ep_send_events), as dumped. The dump made sure the file was ready for
// something.
func (epoll) Fix(t Task, epolls []*image.File) error {
	watch := func(epfd int, tg image.EpollTarget, events uint32) error {
		// struct epoll_event is packed on x86-64: u32 events, u64 data.
		ev := make([]byte, 12)
		binary.LittleEndian.PutUint32(ev, events)
		binary.LittleEndian.PutUint64(ev[4:], tg.Data)
		addr, err := t.Stash(ev)
		if err != nil {
			return err
		}
		t.Queue(fmt.Sprintf("fd %d: watch fd %d with epoll", epfd, tg.Fd), unix.SYS_EPOLL_CTL, uintptr(epfd), unix.EPOLL_CTL_ADD, uintptr(tg.Fd), addr)
		return nil
	}
	for _, f := range epolls {
		epfd := t.FdOf(f.ID)
		fired := 0
		for _, tg := range f.Epoll {
			if !Disarmed(tg.Events) {
				continue
			}
			c, err := CopyFd(t.Pid(), tg.Fd)
			if err != nil {
				return fmt.Errorf("fd %d: one-shot entry for fd %d: %w", epfd, tg.Fd, err)
			}
			ready, err := PollNow(c)
			unix.Close(c)
			if err != nil || ready == 0 {
				return fmt.Errorf("fd %d: one-shot entry for fd %d that had fired: its file is ready for no event, so it cannot be brought back disarmed (%v)", epfd, tg.Fd, err)
			}
			if err := watch(epfd, tg, tg.Events|uint32(uint16(ready))); err != nil {
				return err
			}
			fired++
		}
		if fired == 0 {
			continue
		}
		if err := t.Flush(); err != nil {
			return err
		}
		buf, err := t.Put(make([]byte, 12*(fired+1)))
		if err != nil {
			return err
		}
		n, err := t.Sys(unix.SYS_EPOLL_WAIT, uintptr(epfd), buf, uintptr(fired+1), 0)
		if err != nil {
			return fmt.Errorf("fd %d: fire one-shot entries (epoll_wait): %w", epfd, err)
		}
		if int(n) != fired {
			return fmt.Errorf("fd %d: %d of %d one-shot entries fired: they cannot be brought back disarmed", epfd, n, fired)
		}
	}
	for _, f := range epolls {
		epfd := t.FdOf(f.ID)
		for _, tg := range f.Epoll {
			if Disarmed(tg.Events) {
				continue
			}
			if err := watch(epfd, tg, tg.Events); err != nil {
				return err
			}
		}
	}
	return t.Flush()
}

// EpollPrivateBits are the event bits an EPOLLONESHOT entry keeps once it
// has fired (EP_PRIVATE_BITS, fs/eventpoll.c: EPOLLWAKEUP, EPOLLONESHOT,
// EPOLLET, EPOLLEXCLUSIVE).
const EpollPrivateBits = 1<<29 | 1<<30 | 1<<31 | 1<<28

// Disarmed reports whether an epoll entry's event mask (as fdinfo shows it)
// is that of a one-shot entry that has fired: only the private bits are
// left, so it reports nothing until EPOLL_CTL_MOD re-arms it.
func Disarmed(events uint32) bool {
	return events&unix.EPOLLONESHOT != 0 && events&^EpollPrivateBits == 0
}

// readyEvents polls fd of pid (a copy of it) for every event, without waiting.
func readyEvents(pid, fd int) (int16, error) {
	c, err := CopyFd(pid, fd)
	if err != nil {
		return 0, err
	}
	defer unix.Close(c)
	return PollNow(c)
}

// PollNow returns the events fd is ready for now (poll(2), all events).
func PollNow(fd int) (int16, error) {
	// POLLIN, PRI, OUT, RDNORM, RDBAND, WRNORM, WRBAND, MSG, RDHUP: the
	// same bits as the EPOLL* events (include/uapi/linux/eventpoll.h).
	const all = 0x1 | 0x2 | 0x4 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x2000
	pfd := []unix.PollFd{{Fd: int32(fd), Events: all}}
	if _, err := unix.Poll(pfd, 0); err != nil {
		return 0, err
	}
	return pfd[0].Revents &^ unix.POLLNVAL, nil
}

func sameEpollTarget(pid, fd, epfd, tfd int) (bool, error) {
	slot := struct{ Efd, Tfd, Toff uint32 }{uint32(epfd), uint32(tfd), 0}
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid), uintptr(pid), kcmpEpollTfd, uintptr(fd), uintptr(unsafe.Pointer(&slot)), 0)
	if e != 0 {
		return false, e
	}
	return r == 0, nil
}
