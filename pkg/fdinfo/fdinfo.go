package fdinfo

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"unsafe"

	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/memdump"
	"golang.org/x/sys/unix"
)

// UnsupportedError names an fd cr cannot save yet.
type UnsupportedError struct {
	Fd   int
	What string
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("fd %d is %s: not supported yet", e.Fd, e.What)
}

// Entry is one fd with its open file description.
type Entry struct {
	Fd      int
	Cloexec bool
	File    image.File
	MntID   int
}

// Table is a process's fd table; Files holds each description once.
type Table struct {
	Fds   []image.Fd
	Files []image.File
}

const (
	oCloexec     = 02000000
	kcmpFile     = 0 // KCMP_FILE, linux/kcmp.h
	kcmpEpollTfd = 7 // KCMP_EPOLL_TFD
)

// IsTTY reports whether a character device number is a terminal:
// /dev/tty*, /dev/console, /dev/ptmx (majors 4 and 5) or a pty (136-143).
func IsTTY(rdev uint64) bool {
	maj := unix.Major(rdev)
	return maj == 4 || maj == 5 || (maj >= 136 && maj <= 143)
}

// TTYError is a terminal fd, refused unless the caller allows terminals.
type TTYError struct {
	Fd   int
	Path string
}

func (e *TTYError) Error() string { return fmt.Sprintf("fd %d is the terminal %s", e.Fd, e.Path) }

// Read returns the fd table of pid. nextID numbers new file descriptions.
// With allowTTY, terminals are recorded as image.FileTTY instead of refused.
func Read(pid int, nextID int, allowTTY bool) (*Table, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var entries []Entry
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ent, err := readOne(pid, fd, allowTTY)
		if err != nil {
			return nil, err
		}
		entries = append(entries, ent)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Fd < entries[j].Fd })

	// Group fds that share one open file description.
	t := &Table{}
	type key struct{ dev, ino uint64 }
	byFile := map[key][]int{} // -> indexes into t.Files
	firstFd := map[int]int{}  // file index -> an fd that has it
	for _, e := range entries {
		k := key{e.File.Ident.Dev, e.File.Ident.Ino}
		id := -1
		for _, fi := range byFile[k] {
			same, err := sameFile(pid, firstFd[fi], e.Fd)
			if err != nil {
				return nil, err
			}
			if same {
				id = t.Files[fi].ID
				break
			}
		}
		if id < 0 {
			e.File.ID = nextID
			id = nextID
			nextID++
			byFile[k] = append(byFile[k], len(t.Files))
			firstFd[len(t.Files)] = e.Fd
			t.Files = append(t.Files, e.File)
		}
		t.Fds = append(t.Fds, image.Fd{Fd: e.Fd, FileID: id, Cloexec: e.Cloexec})
	}
	if err := t.resolvePipes(pid); err != nil {
		return nil, err
	}
	if err := t.resolveEpolls(pid); err != nil {
		return nil, err
	}
	return t, nil
}

// fdOf returns an fd of the table that holds file id.
func (t *Table) fdOf(id int) int {
	for _, f := range t.Fds {
		if f.FileID == id {
			return f.Fd
		}
	}
	return -1
}

// resolvePipes checks that both ends of every pipe are in the process and
// saves the bytes sitting in it, read without consuming them (tee(2) from a
// copy of the read end into a pipe of our own).
func (t *Table) resolvePipes(pid int) error {
	type ends struct{ r, w []int } // indexes into t.Files
	pipes := map[uint64]*ends{}
	for i := range t.Files {
		f := &t.Files[i]
		if f.Pipe == nil {
			continue
		}
		p := pipes[f.Pipe.ID]
		if p == nil {
			p = &ends{}
			pipes[f.Pipe.ID] = p
		}
		if f.Flags&unix.O_ACCMODE == unix.O_WRONLY {
			p.w = append(p.w, i)
		} else {
			p.r = append(p.r, i)
		}
	}
	for id, p := range pipes {
		if len(p.r) != 1 || len(p.w) != 1 {
			i := append(p.r, p.w...)[0]
			return &UnsupportedError{t.fdOf(t.Files[i].ID), fmt.Sprintf("a pipe (pipe:[%d]) whose other end is not open in the process (a pipeline between processes)", id)}
		}
		rf := &t.Files[p.r[0]]
		fd := t.fdOf(rf.ID)
		data, size, err := peekPipe(pid, fd)
		if err != nil {
			return fmt.Errorf("fd %d: read pipe contents: %w", fd, err)
		}
		rf.Pipe.Data, rf.Pipe.Size = data, size
		t.Files[p.w[0]].Pipe.Size = size
	}
	return nil
}

func peekPipe(pid, fd int) ([]byte, int, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, 0, err
	}
	defer unix.Close(pidfd)
	src, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return nil, 0, err
	}
	defer unix.Close(src)
	size, err := unix.FcntlInt(uintptr(src), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		return nil, 0, err
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, 0, err
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, size); err != nil {
		return nil, 0, err
	}
	n, err := unix.Tee(src, p[1], size, unix.SPLICE_F_NONBLOCK)
	if err == unix.EAGAIN {
		return nil, size, nil // empty
	}
	if err != nil {
		return nil, 0, err
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(os.NewFile(uintptr(p[0]), "pipe"), buf); err != nil {
		return nil, 0, err
	}
	return buf, size, nil
}

// resolveEpolls maps every watched target to an fd of the process that holds
// the watched file (kcmp KCMP_EPOLL_TFD): the fd number an entry was
// registered with may since have been closed or reused.
func (t *Table) resolveEpolls(pid int) error {
	for i := range t.Files {
		f := &t.Files[i]
		if f.Type != image.FileEpoll {
			continue
		}
		epfd := t.fdOf(f.ID)
		for j := range f.Epoll {
			tgt := &f.Epoll[j]
			found := -1
			candidates := append([]int{tgt.Fd}, allFds(t)...)
			for _, fd := range candidates {
				same, err := sameEpollTarget(pid, fd, epfd, tgt.Fd)
				if err == nil && same {
					found = fd
					break
				}
			}
			if found < 0 {
				return &UnsupportedError{epfd, fmt.Sprintf("an epoll instance watching a file that is no longer open (registered as fd %d)", tgt.Fd)}
			}
			tgt.Fd = found
		}
	}
	return nil
}

func allFds(t *Table) []int {
	out := make([]int, len(t.Fds))
	for i, f := range t.Fds {
		out[i] = f.Fd
	}
	return out
}

func sameEpollTarget(pid, fd, epfd, tfd int) (bool, error) {
	slot := struct{ Efd, Tfd, Toff uint32 }{uint32(epfd), uint32(tfd), 0}
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid), uintptr(pid), kcmpEpollTfd, uintptr(fd), uintptr(unsafe.Pointer(&slot)), 0)
	if e != 0 {
		return false, e
	}
	return r == 0, nil
}

func sameFile(pid, fd1, fd2 int) (bool, error) {
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid), uintptr(pid), kcmpFile, uintptr(fd1), uintptr(fd2), 0)
	if e != 0 {
		return false, fmt.Errorf("kcmp fds %d and %d of pid %d: %w", fd1, fd2, pid, e)
	}
	return r == 0, nil
}

func readOne(pid, fd int, allowTTY bool) (Entry, error) {
	e := Entry{Fd: fd}
	link := fmt.Sprintf("/proc/%d/fd/%d", pid, fd)
	target, err := os.Readlink(link)
	if err != nil {
		return e, fmt.Errorf("fd %d: %w", fd, err)
	}
	special := ""
	switch {
	case strings.HasPrefix(target, "pipe:"):
		special = image.FilePipe
	case target == "anon_inode:[eventfd]":
		special = image.FileEventfd
	case target == "anon_inode:[eventpoll]":
		special = image.FileEpoll
	case strings.HasPrefix(target, "socket:"):
		return e, &UnsupportedError{fd, "a socket"}
	case strings.HasPrefix(target, "anon_inode:"):
		kind := strings.Trim(strings.TrimPrefix(target, "anon_inode:"), "[]")
		return e, &UnsupportedError{fd, "an " + kind}
	case !strings.HasPrefix(target, "/"):
		return e, &UnsupportedError{fd, fmt.Sprintf("%q", target)}
	}
	if special != "" {
		return readSpecial(pid, fd, link, target, special)
	}
	id, err := memdump.Identify(link, target)
	if err != nil {
		return e, fmt.Errorf("fd %d: %w", fd, err)
	}
	pos, flags, mnt, err := readFdinfo(pid, fd)
	if err != nil {
		return e, err
	}
	e.Cloexec = flags&oCloexec != 0
	e.MntID = mnt
	e.File = image.File{Flags: flags &^ oCloexec, Pos: pos, Ident: id}
	var st unix.Stat_t
	switch id.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if strings.HasSuffix(target, " (deleted)") {
			return e, &UnsupportedError{fd, "the deleted file " + strings.TrimSuffix(target, " (deleted)")}
		}
		e.File.Type = image.FileReg
	case unix.S_IFDIR:
		e.File.Type = image.FileDir
	case unix.S_IFCHR:
		if err := unix.Stat(link, &st); err != nil {
			return e, fmt.Errorf("fd %d: %w", fd, err)
		}
		e.File.Type = image.FileChr
		if IsTTY(st.Rdev) {
			if !allowTTY {
				return e, &TTYError{fd, target}
			}
			e.File.Type = image.FileTTY
		}
		e.File.Rdev = st.Rdev
	case unix.S_IFIFO:
		return e, &UnsupportedError{fd, "a FIFO (" + target + ")"}
	default:
		return e, &UnsupportedError{fd, fmt.Sprintf("an unsupported kind of file (%s, mode %o)", target, id.Mode)}
	}
	return e, nil
}

// readSpecial reads a pipe end, an eventfd or an epoll instance.
func readSpecial(pid, fd int, link, target, kind string) (Entry, error) {
	e := Entry{Fd: fd}
	id, err := memdump.Identify(link, target)
	if err != nil {
		return e, fmt.Errorf("fd %d: %w", fd, err)
	}
	info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
	if err != nil {
		return e, fmt.Errorf("fd %d: %w", fd, err)
	}
	pos, flags, mnt, err := readFdinfo(pid, fd)
	if err != nil {
		return e, err
	}
	e.Cloexec = flags&oCloexec != 0
	e.MntID = mnt
	e.File = image.File{Type: kind, Flags: flags &^ oCloexec, Pos: pos, Ident: id}
	switch kind {
	case image.FilePipe:
		e.File.Pipe = &image.Pipe{ID: id.Ino}
	case image.FileEventfd:
		ev := &image.Eventfd{}
		for _, line := range strings.Split(string(info), "\n") {
			k, v, _ := strings.Cut(line, ":")
			v = strings.TrimSpace(v)
			switch k {
			case "eventfd-count":
				ev.Count, _ = strconv.ParseUint(v, 16, 64)
			case "eventfd-semaphore":
				ev.Semaphore = v == "1"
			}
		}
		e.File.Eventfd = ev
	case image.FileEpoll:
		// "tfd: %8d events: %8x data: %16llx pos:%lli ino:%lx sdev:%x" (fs/eventpoll.c)
		for _, line := range strings.Split(string(info), "\n") {
			if !strings.HasPrefix(line, "tfd:") {
				continue
			}
			f := strings.Fields(line)
			if len(f) < 6 {
				return e, fmt.Errorf("fd %d: malformed epoll fdinfo line %q", fd, line)
			}
			tfd, _ := strconv.Atoi(f[1])
			ev, _ := strconv.ParseUint(f[3], 16, 32)
			data, _ := strconv.ParseUint(f[5], 16, 64)
			e.File.Epoll = append(e.File.Epoll, image.EpollTarget{Fd: tfd, Events: uint32(ev), Data: data})
		}
	}
	return e, nil
}

func readFdinfo(pid, fd int) (pos int64, flags uint32, mnt int, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
	if err != nil {
		return 0, 0, 0, fmt.Errorf("fd %d: %w", fd, err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, _ := strings.Cut(s.Text(), ":")
		v = strings.TrimSpace(v)
		switch k {
		case "pos":
			pos, _ = strconv.ParseInt(v, 10, 64)
		case "flags":
			x, _ := strconv.ParseUint(v, 8, 32)
			flags = uint32(x)
		case "mnt_id":
			mnt, _ = strconv.Atoi(v)
		}
	}
	return pos, flags, mnt, s.Err()
}

// ReadFS returns the cwd and root of pid.
func ReadFS(pid int) (image.FS, error) {
	var fs image.FS
	for _, x := range []struct {
		name string
		out  *image.FileIdent
	}{{"cwd", &fs.Cwd}, {"root", &fs.Root}} {
		link := fmt.Sprintf("/proc/%d/%s", pid, x.name)
		target, err := os.Readlink(link)
		if err != nil {
			return fs, fmt.Errorf("%s: %w", x.name, err)
		}
		if strings.HasSuffix(target, " (deleted)") {
			return fs, &memdump.UnsupportedError{What: fmt.Sprintf("the %s %s was deleted", x.name, target)}
		}
		id, err := memdump.Identify(link, target)
		if err != nil {
			return fs, err
		}
		*x.out = id
	}
	return fs, nil
}
