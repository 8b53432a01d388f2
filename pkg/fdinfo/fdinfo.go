package fdinfo

import (
	"bufio"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

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
	oCloexec = 02000000
	kcmpFile = 0 // KCMP_FILE, linux/kcmp.h
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
	return t, nil
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
	switch {
	case strings.HasPrefix(target, "pipe:"):
		return e, &UnsupportedError{fd, "a pipe"}
	case strings.HasPrefix(target, "socket:"):
		return e, &UnsupportedError{fd, "a socket"}
	case strings.HasPrefix(target, "anon_inode:"):
		kind := strings.Trim(strings.TrimPrefix(target, "anon_inode:"), "[]")
		return e, &UnsupportedError{fd, "an " + kind}
	case !strings.HasPrefix(target, "/"):
		return e, &UnsupportedError{fd, fmt.Sprintf("%q", target)}
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
