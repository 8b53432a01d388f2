package memdump

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// Mapping is one entry of /proc/PID/smaps.
type Mapping struct {
	Start, End uint64
	Perms      string // "rwxp" / "r--s"
	Offset     uint64
	Dev        string // major:minor of the backing file
	Inode      uint64
	Path       string
	VmFlags    []string
}

// Shared reports a MAP_SHARED mapping.
func (m *Mapping) Shared() bool { return len(m.Perms) == 4 && m.Perms[3] == 's' }

// HasVmFlag reports whether smaps lists flag f (e.g. "gd", "dd").
func (m *Mapping) HasVmFlag(f string) bool {
	for _, x := range m.VmFlags {
		if x == f {
			return true
		}
	}
	return false
}

// ReadSmaps parses /proc/PID/smaps.
func ReadSmaps(pid int) ([]Mapping, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return nil, err
	}
	return ParseSmaps(data)
}

// ParseSmaps parses the text of an smaps (or maps) file.
func ParseSmaps(data []byte) ([]Mapping, error) {
	var out []Mapping
	s := bufio.NewScanner(bytes.NewReader(data))
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		line := s.Text()
		if strings.HasPrefix(line, "VmFlags:") {
			if len(out) > 0 {
				out[len(out)-1].VmFlags = strings.Fields(line[len("VmFlags:"):])
			}
			continue
		}
		// Header lines start with a hex range; field lines with "Name:".
		dash := strings.IndexByte(line, '-')
		sp := strings.IndexByte(line, ' ')
		if dash <= 0 || sp < dash {
			continue
		}
		if _, err := strconv.ParseUint(line[:dash], 16, 64); err != nil {
			continue
		}
		m, err := parseMapsLine(line)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, s.Err()
}

func parseMapsLine(line string) (Mapping, error) {
	var m Mapping
	f := strings.Fields(line)
	if len(f) < 5 {
		return m, fmt.Errorf("malformed maps line %q", line)
	}
	a, b, _ := strings.Cut(f[0], "-")
	var err1, err2, err3, err4 error
	m.Start, err1 = strconv.ParseUint(a, 16, 64)
	m.End, err2 = strconv.ParseUint(b, 16, 64)
	m.Perms = f[1]
	m.Offset, err3 = strconv.ParseUint(f[2], 16, 64)
	m.Dev = f[3]
	m.Inode, err4 = strconv.ParseUint(f[4], 10, 64)
	if err := errors.Join(err1, err2, err3, err4); err != nil || len(m.Perms) != 4 {
		return m, fmt.Errorf("malformed maps line %q", line)
	}
	// The path is everything after the fifth field (it may contain spaces).
	rest := line
	for i := 0; i < 5; i++ {
		rest = strings.TrimLeft(rest, " ")
		j := strings.IndexByte(rest, ' ')
		if j < 0 {
			rest = ""
			break
		}
		rest = rest[j:]
	}
	m.Path = strings.TrimLeft(rest, " ")
	return m, nil
}

// UnsupportedError names state that cr cannot save yet.
type UnsupportedError struct{ What string }

func (e *UnsupportedError) Error() string { return e.What + ": not supported yet" }

// Identify stats a file through a /proc magic link (so the file is the one
// the process has, even if its path was replaced) and records its identity.
func Identify(procPath, path string) (image.FileIdent, error) {
	var st unix.Stat_t
	if err := unix.Stat(procPath, &st); err != nil {
		return image.FileIdent{}, fmt.Errorf("stat %s (%s): %w", path, procPath, err)
	}
	return image.FileIdent{
		Path: path, Dev: st.Dev, Ino: st.Ino, Size: st.Size,
		MtimeNs: st.Mtim.Nano(), Mode: st.Mode,
	}, nil
}

// isSysVShm reports a SysV shared memory segment's name in maps:
// "/SYSV" and the key as 8 hex digits, always " (deleted)".
func isSysVShm(path string) bool {
	hex, ok := strings.CutPrefix(path, "/SYSV")
	if !ok || len(hex) != 8+len(" (deleted)") || !strings.HasSuffix(hex, " (deleted)") {
		return false
	}
	_, err := strconv.ParseUint(hex[:8], 16, 32)
	return err == nil
}

// VMAs turns the mappings of pid into image VMAs. Mappings cr cannot save
// yet are left out and reported together: the error then joins one
// *UnsupportedError per such VMA, naming it (errors.As finds the first);
// any other error is a failure to read the mappings.
func VMAs(pid int, maps []Mapping) ([]image.VMA, error) {
	var out []image.VMA
	var refused []error
vmas:
	for i := range maps {
		m := &maps[i]
		v := image.VMA{Start: m.Start, End: m.End, Pgoff: m.Offset, VmFlags: m.VmFlags}
		v.Prot = strings.ReplaceAll(m.Perms[:3], "-", "")
		if v.Prot == "" {
			v.Prot = "-"
		}
		if m.Shared() {
			v.Flags = append(v.Flags, image.VMAShared)
		}
		if m.HasVmFlag("gd") {
			v.Flags = append(v.Flags, image.VMAGrowsDown)
		}
		where := fmt.Sprintf("vma %#x-%#x", m.Start, m.End)
		switch {
		case m.Path == "[vsyscall]":
			continue // not a real VMA
		case m.Path == "[vdso]":
			v.Special = image.SpecialVdso
		case m.Path == "[vvar]":
			v.Special = image.SpecialVvar
		case m.Path == "[vvar_vclock]":
			v.Special = image.SpecialVvarVclock
		case m.Path == "[heap]":
			v.Special = image.SpecialHeap
		case m.Path == "[stack]":
			v.Special = image.SpecialStack
		case strings.HasPrefix(m.Path, "["):
			refused = append(refused, &UnsupportedError{fmt.Sprintf("%s %s", where, m.Path)})
			continue vmas
		case m.Shared() && isSysVShm(m.Path):
			// ipc/shm.c (newseg) names a segment's file "SYSV%08x" (its
			// key) on the internal shm mount and sets the inode number to
			// the shmid (which can be 0).
			// The segment itself is saved once for the tree (pkg/ipc).
			if m.HasVmFlag("ht") {
				key, _ := strconv.ParseUint(m.Path[len("/SYSV"):len("/SYSV")+8], 16, 32)
				refused = append(refused, &UnsupportedError{fmt.Sprintf("%s is an attached SysV shared memory segment in huge pages (SHM_HUGETLB; key %#x, shmid %d)", where, key, m.Inode)})
				continue vmas
			}
			id := int(m.Inode)
			v.SysVShmid = &id
		case m.HasVmFlag("ht") && !isSysVShm(m.Path):
			// hugetlbfs: MAP_HUGETLB anonymous memory shows as
			// "/anon_hugepage (deleted)", a hugetlbfs file by its path.
			what := "hugetlb memory (MAP_HUGETLB)"
			if !strings.HasPrefix(m.Path, "/anon_hugepage") {
				what = "a hugetlbfs file (" + m.Path + ")"
			}
			refused = append(refused, &UnsupportedError{fmt.Sprintf("%s is %s", where, what)})
			continue vmas
		case m.Shared() && m.Path == "/secretmem (deleted)":
			// mm/secretmem.c: the pages are removed from the kernel's
			// direct map, and no other process can read them.
			refused = append(refused, &UnsupportedError{fmt.Sprintf("%s is secret memory (memfd_secret(2)), which only the process itself can read", where)})
			continue vmas
		case m.Inode == 0 && m.Shared():
			refused = append(refused, &UnsupportedError{fmt.Sprintf("%s is shared anonymous memory", where)})
			continue vmas
		case m.Inode == 0 && m.Path != "":
			refused = append(refused, &UnsupportedError{fmt.Sprintf("%s maps %s", where, m.Path)})
			continue vmas
		case m.Inode != 0 && (strings.HasPrefix(m.Path, "/dev/zero (deleted)") || strings.HasPrefix(m.Path, "/memfd:")):
			// Shared anonymous memory, or a memfd: saved once per object.
			v.Shmem = m.Inode
		case m.Inode != 0:
			if strings.HasSuffix(m.Path, " (deleted)") {
				// A deleted regular file: its contents are saved once as a
				// ghost (image.ShmemGhost; pkg/files ghost.go).
				id, err := Identify(fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, m.Start, m.End), m.Path)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", where, err)
				}
				if id.Mode&unix.S_IFMT != unix.S_IFREG {
					refused = append(refused, &UnsupportedError{fmt.Sprintf("%s maps the deleted file %s, which is not a regular file", where, strings.TrimSuffix(m.Path, " (deleted)"))})
					continue vmas
				}
				v.Shmem = image.GhostID(id.Dev, id.Ino)
				break
			}
			if m.Shared() && (strings.HasPrefix(m.Path, "/dev/zero") || strings.HasPrefix(m.Path, "/memfd:")) {
				refused = append(refused, &UnsupportedError{fmt.Sprintf("%s is shared memory (%s)", where, m.Path)})
				continue vmas
			}
			id, err := Identify(fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, m.Start, m.End), m.Path)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			if id.Mode&unix.S_IFMT != unix.S_IFREG {
				refused = append(refused, &UnsupportedError{fmt.Sprintf("%s maps %s, which is not a regular file", where, m.Path)})
				continue vmas
			}
			v.File = &id
		}
		if v.Special == "" && (m.HasVmFlag("io") || m.HasVmFlag("pf")) {
			refused = append(refused, &UnsupportedError{fmt.Sprintf("%s is a device mapping (%s)", where, m.Path)})
			continue vmas
		}
		out = append(out, v)
	}
	return out, errors.Join(refused...)
}
