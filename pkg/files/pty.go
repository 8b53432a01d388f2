package files

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/procfs"
	"golang.org/x/sys/unix"
)

// pty: an end of a pseudo-terminal pair whose master the tree holds
// (image.FilePty; pty(7), drivers/tty/pty.c): the master (an fd of
// /dev/ptmx or /dev/pts/ptmx), a slave (/dev/pts/N), or /dev/tty opened by
// a process whose controlling terminal is such a slave. CRIU's criu/tty.c
// is the model; the code is ours.
//
// Dump. The master record carries the pair: its index N (fdinfo
// "tty-index", else TIOCGPTN), the slave side's termios (TCGETS2 on the
// master: every flag, the line discipline byte, the 19 control characters,
// the speeds), the window size, packet mode (TIOCGPKT), the lock
// (TIOCGPTLCK), exclusive mode of each side (TIOCGEXCL), whether every
// slave open had been closed (the master polls POLLHUP), and the session
// whose controlling terminal the slave is with its foreground process group
// (/proc/PID/stat tty_nr and tpgid of the tree's processes). Only these
// read-only ioctls are made, on copies of the tree's own descriptors
// (pidfd_getfd); cr never opens a slave at dump, since the last close of an
// open makes the master's reads fail with EIO.
//
// Data queued in a pty cannot be kept: a terminal has no MSG_PEEK nor
// tee(2), so its queues cannot be read without consuming them, and a dump
// must leave the target as it was. FIONREAD on the master tells what the
// slave side wrote that the master's holder has not read; FIONREAD on a
// slave what was written to the master (typed) that the slave's reader has
// not read. Either is refused, naming the bytes: the dump can be retried
// once the reader has caught up (tmux and shells read at once). Not seen
// and so lost: a partial line typed into a slave in canonical mode (its
// FIONREAD counts only complete lines), bytes still in the tty flip buffer
// on their way to the line discipline (microseconds), and a stopped output
// (^S, tty->flow.stopped), which restore does not stop again.
//
// The pty number is part of what programs see (ttyname(3), $SSH_TTY,
// tmux's #{pane_tty}, utmp): restore gets the same N back or fails. devpts
// gives the lowest free index, so restore opens the ptmx the master was
// opened through until it gets N, closing the others (what CRIU does); if
// it gets a larger one, N is in use on this machine and the restore fails
// naming it. Only the devpts instance mounted at /dev/pts is supported: a
// slave of another instance (a container's) is refused.
//
// An end whose pair is outside the tree: a slave or /dev/tty whose master
// no process of the tree holds is the caller's terminal of a shell job
// (--shell-job turns it into an image.FileTTY, as before) or refused with a
// *TTYError; a master whose slave a process outside the tree holds, or
// that is the controlling terminal of a process outside it, is refused
// naming that process.
//
// Restore. cr makes the pair in itself (O_NOCTTY: cr never takes a
// controlling terminal) the first time any end is opened: the master with
// its index, unlocked, the termios, window size and modes set on it; a
// slave is then opened by its path. /dev/tty is given a slave first and
// reopened inside the process once its controlling terminal is set (Fix):
// it is a new open file description per process (a description shared by
// several processes is not shared again). The lock, the slave's exclusive
// mode and a closed slave side are put back once every process is built
// (Opener.Late). pkg/restore makes the slave the controlling terminal of
// its session (SetCtty: TIOCSCTTY from the session leader, right after its
// setsid and before it forks, so that the session's other processes
// inherit it) and sets the foreground process group once every group
// exists (TIOCSPGRP).
type pty struct{}

// Device numbers (Documentation/admin-guide/devices.txt).
const (
	ttyMajor     = 5 // /dev/tty 5:0, /dev/ptmx 5:2
	ptsMajorLow  = 136
	ptsMajorHigh = 143
	ptmMajorLow  = 128 // pty masters as controlling terminals
	ptmMajorHigh = 135
)

// ptyRole tells which pty end a character device number is ("": none).
func ptyRole(rdev uint64) string {
	maj, min := unix.Major(rdev), unix.Minor(rdev)
	switch {
	case maj == ttyMajor && min == 2:
		return image.PtyMaster
	case maj == ttyMajor && min == 0:
		return image.PtyCtty
	case maj >= ptsMajorLow && maj <= ptsMajorHigh:
		return image.PtySlave
	}
	return ""
}

// ptsIndex returns N for the device number of /dev/pts/N, else -1.
func ptsIndex(rdev uint64) int {
	maj, min := unix.Major(rdev), unix.Minor(rdev)
	if maj < ptsMajorLow || maj > ptsMajorHigh {
		return -1
	}
	return int(maj-ptsMajorLow)*256 + int(min)
}

// ttyDev decodes a /proc/PID/stat tty_nr (new_encode_dev) into a device
// number unix.Major and unix.Minor read.
func ttyDev(ttyNr int) uint64 {
	n := uint64(uint32(ttyNr))
	return unix.Mkdev(uint32((n>>8)&0xfff), uint32((n&0xff)|((n>>12)&0xfff00)))
}

func (pty) Type() string { return image.FilePty }

func (pty) Recognize(p *Probe) bool {
	if !p.IsPath() || p.Mode() != unix.S_IFCHR {
		return false
	}
	st, err := p.Stat()
	return err == nil && ptyRole(st.Rdev) != ""
}

func (pty) Dump(p *Probe, f *image.File) error {
	st, err := p.Stat()
	if err != nil {
		return err
	}
	f.Rdev = st.Rdev
	pt := &image.Pty{Role: ptyRole(st.Rdev)}
	f.Pty = pt
	switch pt.Role {
	case image.PtySlave:
		pt.Index = ptsIndex(st.Rdev)
		var pts unix.Stat_t
		if err := unix.Stat("/dev/pts", &pts); err != nil || pts.Dev != st.Dev {
			if p.AllowTTY {
				return nil // a shell job's terminal, maybe (Resolve decides)
			}
			return &UnsupportedError{Fd: p.Fd, What: fmt.Sprintf("the terminal %s of a devpts instance other than /dev/pts's", p.Target)}
		}
	case image.PtyMaster:
		return dumpMaster(p, pt)
	}
	return nil
}

// dumpMaster reads the state of the pair whose master is fd p.
func dumpMaster(p *Probe, pt *image.Pty) error {
	fd, err := CopyFd(p.Pid, p.Fd)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	pt.Index = -1
	for _, line := range strings.Split(p.Info, "\n") {
		if v, ok := strings.CutPrefix(line, "tty-index:"); ok {
			pt.Index, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	if pt.Index < 0 {
		n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
		if err != nil {
			return fmt.Errorf("fd %d: pty number (TIOCGPTN): %w", p.Fd, err)
		}
		pt.Index = int(n)
	}
	what := func(op string, err error) error {
		return fmt.Errorf("fd %d: pty master of /dev/pts/%d: %s: %w", p.Fd, pt.Index, op, err)
	}
	ld, err := unix.IoctlGetInt(fd, unix.TIOCGETD)
	if err != nil {
		return what("TIOCGETD", err)
	}
	if ld != 0 { // N_TTY
		return &UnsupportedError{Fd: p.Fd, What: fmt.Sprintf("the pty master of /dev/pts/%d, whose line discipline is %d (only N_TTY is saved)", pt.Index, ld)}
	}
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS2)
	if err != nil {
		return what("TCGETS2", err)
	}
	pt.Termios = &image.Termios{Iflag: t.Iflag, Oflag: t.Oflag, Cflag: t.Cflag, Lflag: t.Lflag, Line: t.Line,
		Cc: append([]byte(nil), t.Cc[:]...), Ispeed: t.Ispeed, Ospeed: t.Ospeed}
	ws, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ)
	if err != nil {
		return what("TIOCGWINSZ", err)
	}
	pt.Winsize = &image.Winsize{Row: ws.Row, Col: ws.Col, Xpixel: ws.Xpixel, Ypixel: ws.Ypixel}
	for _, x := range []struct {
		req uint
		op  string
		out *bool
	}{{unix.TIOCGPKT, "TIOCGPKT", &pt.Packet}, {unix.TIOCGPTLCK, "TIOCGPTLCK", &pt.Locked}, {unix.TIOCGEXCL, "TIOCGEXCL", &pt.MasterExcl}} {
		v, err := unix.IoctlGetInt(fd, x.req)
		if err != nil {
			return what(x.op, err)
		}
		*x.out = v != 0
	}
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if _, err := unix.Poll(pfd, 0); err != nil {
		return what("poll", err)
	}
	pt.SlaveClosed = pfd[0].Revents&unix.POLLHUP != 0
	return nil
}

// Resolve pairs every slave and /dev/tty with its master, records the
// sessions the slaves control, and refuses what crosses the tree's border.
// resolvesEmpty: Resolve runs even when the tree holds no pty fd, since a
// process may keep a controlling terminal it has no fd of (which, without
// --shell-job, is refused).
func (pty) resolvesEmpty() {}

func (pty) Resolve(c *Collector, files []*image.File) error {
	masters := map[int]*image.File{}
	for _, f := range files {
		if f.Pty.Role == image.PtyMaster {
			masters[f.Pty.Index] = f
		}
	}
	pids := make([]int, 0, len(c.procs))
	for pid := range c.procs {
		pids = append(pids, pid)
	}
	sort.Ints(pids)
	stats := map[int]*procfs.Stat{}
	for _, pid := range pids {
		st, err := procfs.ReadStat(pid)
		if err != nil {
			return err
		}
		stats[pid] = st
	}
	held := map[int]bool{} // pairs whose slave the tree holds
	for _, f := range files {
		if f.Pty.Role == image.PtyMaster {
			continue
		}
		pid, fd := c.Owner(f.ID)
		if f.Pty.Role == image.PtyCtty {
			f.Pty.Index = -1
			if st := stats[pid]; st != nil && st.TtyNr != 0 {
				f.Pty.Index = ptsIndex(ttyDev(st.TtyNr))
			} else if !c.allowTTY {
				c.Refuse(&UnsupportedError{Pid: pid, Fd: fd, What: "/dev/tty, while the process has no controlling terminal any more"})
				continue
			}
		}
		m := masters[f.Pty.Index]
		if f.Pty.Index < 0 || m == nil {
			if c.allowTTY { // the caller's terminal, as before
				f.Type, f.Pty = image.FileTTY, nil
				continue
			}
			c.Refuse(&TTYError{Pid: pid, Fd: fd, Path: f.Ident.Path, Note: "whose master no process of the dumped tree holds"})
			continue
		}
		if f.Pty.Role != image.PtySlave {
			continue
		}
		held[f.Pty.Index] = true
		cp, err := CopyFd(pid, fd)
		if err != nil {
			return err
		}
		n, err := unix.IoctlGetInt(cp, fionread)
		excl, err2 := unix.IoctlGetInt(cp, unix.TIOCGEXCL)
		unix.Close(cp)
		if err != nil || err2 != nil {
			return fmt.Errorf("fd %d of pid %d: %s: FIONREAD, TIOCGEXCL: %v, %v", fd, pid, f.Ident.Path, err, err2)
		}
		if excl != 0 {
			m.Pty.SlaveExcl = true
		}
		if n > 0 {
			c.Refuse(&UnsupportedError{Pid: pid, Fd: fd, What: fmt.Sprintf("the pty slave %s, holding %d bytes written to its master that were not read yet "+
				"(a terminal's queue cannot be read without consuming it; retry once they are read)", f.Ident.Path, n)})
		}
	}
	for _, idx := range sortedKeys(masters) {
		m := masters[idx]
		if held[idx] {
			m.Pty.SlaveClosed = false
		}
		pid, fd := c.Owner(m.ID)
		cp, err := CopyFd(pid, fd)
		if err != nil {
			return err
		}
		n, err := unix.IoctlGetInt(cp, fionread)
		unix.Close(cp)
		if err != nil {
			return fmt.Errorf("fd %d of pid %d: pty master of /dev/pts/%d: FIONREAD: %w", fd, pid, idx, err)
		}
		if n > 0 {
			c.Refuse(&UnsupportedError{Pid: pid, Fd: fd, What: fmt.Sprintf("the pty master of /dev/pts/%d, holding %d bytes its slave side wrote that were not read yet "+
				"(a terminal's queue cannot be read without consuming it; retry once they are read)", idx, n)})
		}
	}
	// Controlling terminals and their foreground groups.
	for _, pid := range pids {
		st := stats[pid]
		if st.TtyNr == 0 {
			continue
		}
		dev := ttyDev(st.TtyNr)
		m := masters[ptsIndex(dev)]
		if ptsIndex(dev) < 0 || m == nil {
			if !c.allowTTY {
				what := fmt.Sprintf("has a controlling terminal (device %d:%d) that is not a pty whose master the dumped tree holds", unix.Major(dev), unix.Minor(dev))
				if maj := unix.Major(dev); maj >= ptmMajorLow && maj <= ptmMajorHigh {
					what = "has a pty master as its controlling terminal"
				}
				c.Refuse(&UnsupportedError{Pid: pid, Fd: -1, What: what, Option: "--shell-job"})
			}
			continue
		}
		m.Pty.Sid = st.Session
		if st.Tpgid > 0 {
			m.Pty.Fg = st.Tpgid
		}
	}
	if len(masters) > 0 {
		for _, err := range ptyOutsiders(c, masters) {
			c.Refuse(err)
		}
	}
	return nil
}

func sortedKeys(m map[int]*image.File) []int {
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	return keys
}

// ptyOutsiders refuses processes outside the collection that hold a slave
// of one of the tree's masters, or have it as controlling terminal: a scan
// of /proc.
func ptyOutsiders(c *Collector, masters map[int]*image.File) []error {
	var pts unix.Stat_t
	if err := unix.Stat("/dev/pts", &pts); err != nil {
		return []error{fmt.Errorf("stat /dev/pts: %w", err)}
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return []error{fmt.Errorf("list processes: %w", err)}
	}
	var out []error
	refuse := func(idx, pid int, comm, how string) {
		mp, mfd := c.Owner(masters[idx].ID)
		out = append(out, &UnsupportedError{Pid: mp, Fd: mfd, What: fmt.Sprintf("the pty master of /dev/pts/%d, whose slave process %d (%s), outside the dumped tree, %s", idx, pid, comm, how)})
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, in := c.procs[pid]; in {
			continue
		}
		st, err := procfs.ReadStat(pid)
		if err != nil || st.State == 'Z' {
			continue
		}
		if st.TtyNr != 0 {
			if idx := ptsIndex(ttyDev(st.TtyNr)); idx >= 0 && masters[idx] != nil {
				refuse(idx, pid, st.Comm, "has as its controlling terminal")
			}
		}
		dir := fmt.Sprintf("/proc/%d/fd", pid)
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, fe := range fds {
			link := filepath.Join(dir, fe.Name())
			target, err := os.Readlink(link)
			if err != nil || !strings.HasPrefix(target, "/dev/pts/") {
				continue
			}
			var fst unix.Stat_t
			if unix.Stat(link, &fst) != nil || fst.Dev != pts.Dev {
				continue
			}
			if idx := ptsIndex(fst.Rdev); idx >= 0 && masters[idx] != nil {
				refuse(idx, pid, st.Comm, "holds at fd "+fe.Name())
			}
		}
	}
	return out
}

func (pty) Validate(c *image.Checkpoint, f *image.File) error {
	if err := need(f.Pty != nil, f, "pty record"); err != nil {
		return err
	}
	pt := f.Pty
	if pt.Index < 0 || pt.Index >= 1<<20 {
		return fmt.Errorf("pty number %d", pt.Index)
	}
	switch pt.Role {
	case image.PtyMaster:
		if pt.Termios == nil || len(pt.Termios.Cc) != len(unix.Termios{}.Cc) || pt.Winsize == nil {
			return fmt.Errorf("a pty master of /dev/pts/%d without its termios (19 control characters) and window size", pt.Index)
		}
		if pt.Sid < 0 || pt.Fg < 0 {
			return fmt.Errorf("a pty master of /dev/pts/%d with session %d and foreground group %d", pt.Index, pt.Sid, pt.Fg)
		}
		for i := range c.Files {
			o := &c.Files[i]
			if o != f && o.Type == image.FilePty && o.Pty != nil && o.Pty.Role == image.PtyMaster && o.Pty.Index == pt.Index {
				return fmt.Errorf("two pty masters of /dev/pts/%d (files %d and %d)", pt.Index, f.ID, o.ID)
			}
		}
	case image.PtySlave, image.PtyCtty:
		if ptyMaster(c, pt.Index) == nil {
			return fmt.Errorf("a pty %s of /dev/pts/%d whose master is not in the image", pt.Role, pt.Index)
		}
	default:
		return fmt.Errorf("a pty end of the unknown role %q", pt.Role)
	}
	return nil
}

// ptyMaster returns the master record of pair idx, or nil.
func ptyMaster(c *image.Checkpoint, idx int) *image.File {
	for i := range c.Files {
		f := &c.Files[i]
		if f.Type == image.FilePty && f.Pty != nil && f.Pty.Role == image.PtyMaster && f.Pty.Index == idx {
			return f
		}
	}
	return nil
}

// Check looks at what restore needs of this machine: the ptmx to open.
func (pty) Check(_ Env, f *image.File) error {
	if f.Pty.Role != image.PtyMaster {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Stat(f.Ident.Path, &st); err != nil {
		return fmt.Errorf("pty master of /dev/pts/%d: %w", f.Pty.Index, err)
	}
	if st.Rdev != f.Rdev {
		return &ChangedFileError{Path: f.Ident.Path, What: "it is not the pty multiplexer"}
	}
	return nil
}

// ptyState is what one restore's pty ends share: pair index -> cr's fd of
// its master.
type ptyState map[int]int

func (k pty) Open(o *Opener, f *image.File) (int, error) {
	m, err := k.pair(o, f.Pty.Index)
	if err != nil {
		return 0, err
	}
	if f.Pty.Role == image.PtyMaster {
		fd, err := unix.FcntlInt(uintptr(m), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return 0, err
		}
		if err := SetFlags(fd, f.Flags); err != nil {
			unix.Close(fd)
			return 0, err
		}
		return fd, nil
	}
	return openPath(slavePath(o.Ck, f.Pty.Index), f.Flags)
}

// slavePath is /dev/pts/N beside the ptmx the master was opened through.
func slavePath(c *image.Checkpoint, idx int) string {
	dir := "/dev/pts"
	if m := ptyMaster(c, idx); m != nil && filepath.Base(filepath.Dir(m.Ident.Path)) == "pts" {
		dir = filepath.Dir(m.Ident.Path)
	}
	return filepath.Join(dir, strconv.Itoa(idx))
}

// pair returns cr's fd of the master of pair idx, making the pair the
// first time.
func (k pty) pair(o *Opener, idx int) (int, error) {
	st := stateOf[ptyState](o, k)
	if *st == nil {
		*st = ptyState{}
	}
	if fd, ok := (*st)[idx]; ok {
		return fd, nil
	}
	m := ptyMaster(o.Ck, idx)
	if m == nil {
		return 0, fmt.Errorf("image is inconsistent: no master of /dev/pts/%d", idx)
	}
	fd, err := makePair(m)
	if err != nil {
		return 0, err
	}
	(*st)[idx] = fd
	o.Keep(fd)
	pt := m.Pty
	o.Env.Logf("made the pty pair /dev/pts/%d", idx)
	o.Late(func() error { return finishPair(o, fd, pt) })
	return fd, nil
}

// makePair opens the ptmx until devpts gives pair number idx and sets its
// state; the other pairs opened meanwhile are closed again.
func makePair(m *image.File) (int, error) {
	pt := m.Pty
	var extra []int
	defer func() {
		for _, fd := range extra {
			unix.Close(fd)
		}
	}()
	var fd int
	for {
		var err error
		fd, err = unix.Open(m.Ident.Path, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
		if err != nil {
			return 0, fmt.Errorf("open %s for the pty /dev/pts/%d: %w", m.Ident.Path, pt.Index, err)
		}
		n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
		if err != nil {
			unix.Close(fd)
			return 0, fmt.Errorf("%s: TIOCGPTN: %w", m.Ident.Path, err)
		}
		if int(n) == pt.Index {
			break
		}
		extra = append(extra, fd)
		if int(n) > pt.Index {
			return 0, fmt.Errorf("the pty /dev/pts/%d is in use on this machine, and its programs know their terminal by that name: end what holds it, then restore", pt.Index)
		}
	}
	what := func(op string, err error) (int, error) {
		unix.Close(fd)
		return 0, fmt.Errorf("pty /dev/pts/%d: %s: %w", pt.Index, op, err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		return what("unlock", err)
	}
	t := pt.Termios
	tio := unix.Termios{Iflag: t.Iflag, Oflag: t.Oflag, Cflag: t.Cflag, Lflag: t.Lflag, Line: t.Line, Ispeed: t.Ispeed, Ospeed: t.Ospeed}
	copy(tio.Cc[:], t.Cc)
	if err := unix.IoctlSetTermios(fd, unix.TCSETS2, &tio); err != nil {
		return what("TCSETS2", err)
	}
	w := pt.Winsize
	if err := unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: w.Row, Col: w.Col, Xpixel: w.Xpixel, Ypixel: w.Ypixel}); err != nil {
		return what("TIOCSWINSZ", err)
	}
	if pt.Packet {
		if err := unix.IoctlSetPointerInt(fd, unix.TIOCPKT, 1); err != nil {
			return what("TIOCPKT", err)
		}
	}
	if pt.MasterExcl {
		if err := ioctlNone(fd, unix.TIOCEXCL); err != nil {
			return what("TIOCEXCL", err)
		}
	}
	return fd, nil
}

// finishPair puts back, once every process is built, what would have
// stopped the pair's slave from being opened meanwhile: the slave's
// exclusive mode, a slave side closed by all, the lock.
func finishPair(o *Opener, master int, pt *image.Pty) error {
	if pt.SlaveExcl || pt.SlaveClosed {
		s, err := openPath(slavePath(o.Ck, pt.Index), unix.O_RDWR)
		if err != nil {
			return fmt.Errorf("pty /dev/pts/%d: %w", pt.Index, err)
		}
		if pt.SlaveExcl {
			err = ioctlNone(s, unix.TIOCEXCL)
		}
		unix.Close(s) // the last close of a slave: the master sees it closed
		if err != nil {
			return fmt.Errorf("pty /dev/pts/%d: TIOCEXCL: %w", pt.Index, err)
		}
	}
	if pt.Locked {
		if err := unix.IoctlSetPointerInt(master, unix.TIOCSPTLCK, 1); err != nil {
			return fmt.Errorf("pty /dev/pts/%d: lock: %w", pt.Index, err)
		}
	}
	return nil
}

func ioctlNone(fd int, req uintptr) error {
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, 0); e != 0 {
		return e
	}
	return nil
}

// Fix reopens each /dev/tty inside the process, whose controlling terminal
// is set by now, over the slave it was given meanwhile.
func (pty) Fix(t Task, files []*image.File) error {
	for _, f := range files {
		if f.Pty.Role != image.PtyCtty {
			continue
		}
		fd := t.FdOf(f.ID)
		if fd < 0 {
			continue
		}
		cl, err := t.Sys(unix.SYS_FCNTL, uintptr(fd), unix.F_GETFD)
		if err != nil {
			return fmt.Errorf("fd %d: %w", fd, err)
		}
		path, err := t.Put([]byte("/dev/tty\x00"))
		if err != nil {
			return err
		}
		fl := uintptr(f.Flags) &^ (unix.O_CREAT | unix.O_EXCL | unix.O_TRUNC)
		tmp, err := t.Sys(unix.SYS_OPENAT, ^uintptr(99), path, fl|unix.O_NOCTTY|unix.O_CLOEXEC)
		if err != nil {
			return fmt.Errorf("fd %d: open /dev/tty in pid %d: %w", fd, t.Pid(), err)
		}
		dflags := uintptr(0)
		if cl&unix.FD_CLOEXEC != 0 {
			dflags = unix.O_CLOEXEC
		}
		if _, err := t.Sys(unix.SYS_DUP3, tmp, uintptr(fd), dflags); err != nil {
			return fmt.Errorf("fd %d: /dev/tty: %w", fd, err)
		}
		if _, err := t.Sys(unix.SYS_CLOSE, tmp); err != nil {
			return err
		}
	}
	return nil
}

func (pty) Describe(f *image.File) string {
	if f.Pty == nil {
		return f.Ident.Path
	}
	switch f.Pty.Role {
	case image.PtyMaster:
		s := fmt.Sprintf("%s (pty master of /dev/pts/%d", f.Ident.Path, f.Pty.Index)
		if f.Pty.Sid != 0 {
			s += fmt.Sprintf(", controlling terminal of session %d", f.Pty.Sid)
		}
		return s + ")"
	case image.PtyCtty:
		return fmt.Sprintf("/dev/tty (/dev/pts/%d)", f.Pty.Index)
	}
	return f.Ident.Path
}

// Ctty returns the path of the pty slave that is the controlling terminal
// of session sid in the image c, and makes its pair in o if it is not made
// yet ("": the session has none in the tree). pkg/restore opens it in the
// session leader for TIOCSCTTY.
func Ctty(o *Opener, sid int) (path string, fg int, err error) {
	for i := range o.Ck.Files {
		f := &o.Ck.Files[i]
		if f.Type != image.FilePty || f.Pty == nil || f.Pty.Role != image.PtyMaster || f.Pty.Sid != sid || sid == 0 {
			continue
		}
		if _, err := (pty{}).pair(o, f.Pty.Index); err != nil {
			return "", 0, err
		}
		return slavePath(o.Ck, f.Pty.Index), f.Pty.Fg, nil
	}
	return "", 0, nil
}
