package files

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// ghost: a description of a regular file deleted since it was opened (or
// made with O_TMPFILE): "/PATH (deleted)" (CRIU's ghost files,
// criu/files-reg.c). Its contents, mode and owner are saved once per inode,
// however many fds and mappings use it, as a shared memory object of kind
// image.ShmemGhost (id image.GhostID(dev, ino); pkg/dump dumpShmem,
// memdump.DumpShmem, holes kept with SEEK_DATA/SEEK_HOLE); the record is
// image.File with Shmem naming it. A deleted file larger than the ghost
// limit (--ghost-limit, 1 MiB by default: DefaultGhostLimit) is refused,
// naming the file, its size and the option; so is a deleted path whose file
// still has another link (writes through the copy would not reach it).
//
// Restore makes the file once (MakeGhost, called by restore's Env.Shmem):
// unlinked from the start (O_TMPFILE, or a temporary name removed at once)
// in the directory it was in, or where that directory is gone in the
// nearest directory above it on the same filesystem, with the mode, owner,
// size and contents; each description is its own open of it (through
// /proc/self/fd) with the flags and offset, and mappings map it.
type ghost struct{}

// DefaultGhostLimit is the size above which a deleted file is refused
// (CRIU's --ghost-limit default).
const DefaultGhostLimit = 1 << 20

func (ghost) Type() string { return image.FileGhost }

func (ghost) Recognize(p *Probe) bool {
	return p.IsPath() && p.Mode() == unix.S_IFREG && strings.HasSuffix(p.Target, " (deleted)") &&
		!strings.HasPrefix(p.Target, "/memfd:") && fsMagic(p.Link) != secretmemMagic
}

func (ghost) Dump(p *Probe, f *image.File) error {
	st, err := p.Stat()
	if err != nil {
		return err
	}
	path := strings.TrimSuffix(p.Target, " (deleted)")
	if r := ghostFits(path, st, p.GhostLimit); r != nil {
		r.Fd = p.Fd
		return r
	}
	f.Shmem = image.GhostID(st.Dev, st.Ino)
	return nil
}

// ghostFits refuses (with Fd -1) a deleted file cr does not save: one
// with other links, one above limit (0: DefaultGhostLimit), naming the
// --ghost-limit that would save it.
func ghostFits(path string, st *unix.Stat_t, limit int64) *UnsupportedError {
	if limit == 0 {
		limit = DefaultGhostLimit
	}
	if st.Nlink > 0 {
		return &UnsupportedError{Fd: -1, What: fmt.Sprintf("the deleted path %s of a file that has %d other link(s)", path, st.Nlink)}
	}
	if st.Size > limit {
		return &UnsupportedError{Fd: -1, What: fmt.Sprintf("the deleted file %s of %d bytes, larger than the ghost file limit of %d bytes", path, st.Size, limit),
			Option: "--ghost-limit " + sizeAtLeast(st.Size)}
	}
	return nil
}

// sizeAtLeast writes n bytes as --ghost-limit takes a size, rounded up to
// the largest unit (K, M, G: powers of 1024) it reaches: 2097152 is "2M",
// 1500000 is "2M", 1000 is "1000".
func sizeAtLeast(n int64) string {
	for _, u := range []struct {
		s    string
		size int64
	}{{"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if n >= u.size {
			return strconv.FormatInt((n+u.size-1)/u.size, 10) + u.s
		}
	}
	return strconv.FormatInt(n, 10)
}

// GhostVMAs checks the mappings of deleted files among vmas of pid
// (memdump.VMAs gives them a GhostID as Shmem) against limit, as ghost fds
// are: the refusals, one per file, as *UnsupportedError with Fd -1.
func GhostVMAs(pid int, vmas []image.VMA, limit int64) ([]error, error) {
	var out []error
	seen := map[uint64]bool{}
	for _, v := range vmas {
		if v.Shmem&(1<<63) == 0 || seen[v.Shmem] {
			continue
		}
		seen[v.Shmem] = true
		link := fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, v.Start, v.End)
		var st unix.Stat_t
		if err := unix.Stat(link, &st); err != nil {
			return nil, fmt.Errorf("vma %#x-%#x: %w", v.Start, v.End, err)
		}
		name, err := os.Readlink(link)
		if err != nil {
			return nil, fmt.Errorf("vma %#x-%#x: %w", v.Start, v.End, err)
		}
		if r := ghostFits(strings.TrimSuffix(name, " (deleted)"), &st, limit); r != nil {
			r.What = fmt.Sprintf("vma %#x-%#x maps %s", v.Start, v.End, r.What)
			out = append(out, r)
		}
	}
	return out, nil
}

// GhostExe checks the deleted executable of pid as GhostVMAs does and
// returns its identity and ghost id; refused is the refusal, if any.
func GhostExe(pid int, limit int64) (id image.FileIdent, ghostID uint64, refused error, err error) {
	link := fmt.Sprintf("/proc/%d/exe", pid)
	var st unix.Stat_t
	if err := unix.Stat(link, &st); err != nil {
		return id, 0, nil, fmt.Errorf("exe of pid %d: %w", pid, err)
	}
	name, err := os.Readlink(link)
	if err != nil {
		return id, 0, nil, fmt.Errorf("exe of pid %d: %w", pid, err)
	}
	id = image.FileIdent{Path: name, Dev: st.Dev, Ino: st.Ino, Size: st.Size, MtimeNs: st.Mtim.Nano(), Mode: st.Mode}
	if r := ghostFits(strings.TrimSuffix(name, " (deleted)"), &st, limit); r != nil {
		r.What = "the executable is " + r.What
		return id, 0, r, nil
	}
	return id, image.GhostID(st.Dev, st.Ino), nil, nil
}

func (ghost) Validate(c *image.Checkpoint, f *image.File) error {
	if err := need(f.Shmem != 0, f, "contents"); err != nil {
		return err
	}
	for i := range c.Shmem {
		if c.Shmem[i].ID == f.Shmem && c.Shmem[i].Kind == image.ShmemGhost {
			return nil
		}
	}
	return fmt.Errorf("deleted file of the unknown saved file %d", f.Shmem)
}

func (ghost) Open(o *Opener, f *image.File) (int, error) {
	obj, err := o.Env.Shmem(f.Shmem)
	if err != nil {
		return 0, err
	}
	flags := int(f.Flags)&^(unix.O_CREAT|unix.O_EXCL|unix.O_TRUNC|unix.O_TMPFILE) | unix.O_CLOEXEC
	fd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", obj), flags, 0)
	if err != nil {
		return 0, fmt.Errorf("reopen the deleted file %s: %w", strings.TrimSuffix(f.Ident.Path, " (deleted)"), err)
	}
	if f.Pos != 0 {
		if _, err := unix.Seek(fd, f.Pos, 0); err != nil {
			unix.Close(fd)
			return 0, fmt.Errorf("seek the deleted file %s to %d: %w", f.Ident.Path, f.Pos, err)
		}
	}
	return fd, nil
}

func (ghost) Describe(f *image.File) string {
	return fmt.Sprintf("%s, contents saved", f.Ident.Path)
}

// MakeGhost makes the deleted file sh (kind image.ShmemGhost) for a
// restore: an unlinked file on the filesystem it was on, with its mode,
// owner and size (the caller writes the contents). The file is made in the
// directory of sh.Path or, that directory gone, in the nearest one above
// it on the same filesystem; none there is an error naming the file.
func MakeGhost(sh *image.Shmem) (int, error) {
	dir, err := ghostDir(sh)
	if err != nil {
		return 0, err
	}
	perm := sh.Mode & 0o7777
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, perm)
	if err != nil {
		// A filesystem without O_TMPFILE: a temporary name, removed at once.
		for i := 0; ; i++ {
			name := filepath.Join(dir, fmt.Sprintf(".cr-ghost-%d-%d", os.Getpid(), i))
			fd, err = unix.Open(name, unix.O_CREAT|unix.O_EXCL|unix.O_RDWR|unix.O_CLOEXEC, perm)
			if errors.Is(err, unix.EEXIST) && i < 100 {
				continue
			}
			if err != nil {
				return 0, fmt.Errorf("make the deleted file %s in %s: %w", sh.Path, dir, err)
			}
			if err := unix.Unlink(name); err != nil {
				unix.Close(fd)
				return 0, fmt.Errorf("make the deleted file %s: unlink %s: %w", sh.Path, name, err)
			}
			break
		}
	}
	fail := func(what string, err error) (int, error) {
		unix.Close(fd)
		return 0, fmt.Errorf("make the deleted file %s: %s: %w", sh.Path, what, err)
	}
	if err := unix.Fchown(fd, int(sh.Uid), int(sh.Gid)); err != nil {
		return fail("chown", err)
	}
	if err := unix.Fchmod(fd, perm); err != nil { // after chown, which clears set-id bits
		return fail("chmod", err)
	}
	if err := unix.Ftruncate(fd, sh.Size); err != nil {
		return fail("truncate", err)
	}
	return fd, nil
}

// ghostDir is where the deleted file sh is made again.
func ghostDir(sh *image.Shmem) (string, error) {
	want := filepath.Dir(sh.Path)
	for d := want; ; d = filepath.Dir(d) {
		var st unix.Stat_t
		if err := unix.Stat(d, &st); err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			if d == want || image.GhostID(st.Dev, 0) == image.GhostID(ghostDev(sh.ID), 0) {
				return d, nil
			}
			return "", fmt.Errorf("the directory %s of the deleted file %s is gone, and no directory above it is on its filesystem", want, sh.Path)
		}
		if d == "/" || d == "." {
			return "", fmt.Errorf("the directory %s of the deleted file %s is gone", want, sh.Path)
		}
	}
}

// ghostDev is the part of a ghost's device number its id keeps.
func ghostDev(id uint64) uint64 { return id >> 40 & 0x7fffff }
