package image

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"syscall"
)

// Load reads and checks every metadata file of the image in dir. Pages are
// only checked for size and bounds here; VerifyPages checks their CRCs.
func Load(dir string) (*Checkpoint, error) {
	c := &Checkpoint{}
	recs, err := readFile(dir, InventoryFile, KindInventory)
	if err != nil {
		return nil, err
	}
	if len(recs) != 1 || recs[0].Tag != TagInventory {
		return nil, &FormatError{InventoryFile, headerSize, "expected exactly one inventory record"}
	}
	if err := unmarshal(InventoryFile, recs[0], &c.Inventory); err != nil {
		return nil, err
	}
	inv := &c.Inventory
	if inv.FormatMajor != FormatMajor {
		return nil, &VersionError{InventoryFile, inv.FormatMajor, inv.FormatMinor}
	}
	if len(inv.Pids) == 0 {
		return nil, &FormatError{InventoryFile, recs[0].Offset, "no processes listed"}
	}

	if recs, err = readFile(dir, FilesFile, KindFiles); err != nil {
		return nil, err
	}
	files, errs := decodeFiles(recs)
	ids := map[int]bool{}
	for i, r := range recs {
		if errs[i] != nil {
			return nil, errs[i]
		}
		if r.Tag == TagShmem {
			var sh Shmem
			if err := unmarshal(FilesFile, r, &sh); err != nil {
				return nil, err
			}
			c.Shmem = append(c.Shmem, sh)
			continue
		}
		f := files[i]
		if ids[f.ID] {
			return nil, &FormatError{FilesFile, r.Offset, fmt.Sprintf("file id %d appears twice", f.ID)}
		}
		if msg := checkFile(&f); msg != "" {
			return nil, &FormatError{FilesFile, r.Offset, fmt.Sprintf("file %d: %s", f.ID, msg)}
		}
		ids[f.ID] = true
		c.Files = append(c.Files, f)
	}

	shm := map[uint64]bool{}
	for _, sh := range c.Shmem {
		if shm[sh.ID] || sh.Size < 0 {
			return nil, &FormatError{FilesFile, 0, fmt.Sprintf("shared memory object %d appears twice or has a bad size", sh.ID)}
		}
		shm[sh.ID] = true
	}
	if c.IPC, err = loadIPC(dir); err != nil {
		return nil, err
	}
	for _, pid := range inv.Pids {
		p, err := loadProcess(dir, pid, ids)
		if err != nil {
			return nil, err
		}
		for _, v := range p.VMAs {
			if v.Shmem != 0 && !shm[v.Shmem] {
				return nil, &FormatError{MMFile(pid), 0, fmt.Sprintf("vma %#x-%#x maps the unknown shared memory object %d", v.Start, v.End, v.Shmem)}
			}
		}
		if g := p.MM.ExeGhost; g != 0 && !shm[g] {
			return nil, &FormatError{MMFile(pid), 0, fmt.Sprintf("the executable is the unknown saved file %d", g)}
		}
		c.Processes = append(c.Processes, p)
	}
	if bad := checkIPC(c); bad != "" {
		return nil, &FormatError{IPCFile, 0, bad}
	}
	return c, nil
}

// decodeFiles decodes the file records of recs (Shmem records are left
// zero), errs[i] being record i's error. The JSON decoding is most of the
// cost of loading an image with thousands of files (a process with 1,000
// TCP connections: ~25 ms here), so a large set is split between one
// goroutine per CPU.
func decodeFiles(recs []Record) ([]File, []error) {
	files := make([]File, len(recs))
	errs := make([]error, len(recs))
	workers := runtime.GOMAXPROCS(0)
	if len(recs) < 256 || workers < 2 {
		workers = 1
	}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < len(recs); i += workers {
				if recs[i].Tag != TagShmem {
					errs[i] = expect(FilesFile, recs[i], TagFile, &files[i])
				}
			}
		}(w)
	}
	wg.Wait()
	return files, errs
}

// loadIPC reads ipc.img, which images without SysV IPC objects (and those
// older than format 1.2) do not have: nil then.
func loadIPC(dir string) (*SysVIPC, error) {
	if _, err := os.Stat(filepath.Join(dir, IPCFile)); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	recs, err := readFile(dir, IPCFile, KindIPC)
	if err != nil {
		return nil, err
	}
	s := &SysVIPC{}
	for _, r := range recs {
		var err error
		switch r.Tag {
		case TagSysVShm:
			s.Shm = append(s.Shm, SysVShm{})
			err = unmarshal(IPCFile, r, &s.Shm[len(s.Shm)-1])
		case TagSysVSem:
			s.Sem = append(s.Sem, SysVSem{})
			err = unmarshal(IPCFile, r, &s.Sem[len(s.Sem)-1])
		case TagSysVMsg:
			s.Msg = append(s.Msg, SysVMsg{})
			err = unmarshal(IPCFile, r, &s.Msg[len(s.Msg)-1])
		default:
			err = &FormatError{IPCFile, r.Offset, fmt.Sprintf("unexpected %s record", tagName(r.Tag))}
		}
		if err != nil {
			return nil, err
		}
	}
	return s, nil
}

// checkIPC says what is wrong with the SysV IPC objects of c ("" if
// nothing): ids and keys unique per kind, sizes and values the kernel
// accepts, and every VMA attaching a segment names one of the image with
// a whole attachment of it. The writer and the loader both use it.
func checkIPC(c *Checkpoint) string {
	s := c.IPC
	if s == nil {
		s = &SysVIPC{}
	}
	var perms []IPCPerm
	kinds := []string{}
	segs := map[int]*SysVShm{}
	for i := range s.Shm {
		sh := &s.Shm[i]
		perms, kinds = append(perms, sh.IPCPerm), append(kinds, "shm")
		if sh.Size == 0 || sh.Size > 1<<46 {
			return fmt.Sprintf("segment %d has a bad size %d", sh.ID, sh.Size)
		}
		segs[sh.ID] = sh
	}
	for _, sm := range s.Sem {
		perms, kinds = append(perms, sm.IPCPerm), append(kinds, "sem")
		if len(sm.Values) == 0 || len(sm.Values) > 1<<16 {
			return fmt.Sprintf("semaphore set %d has %d semaphores", sm.ID, len(sm.Values))
		}
		for _, v := range sm.Values {
			if v > 32767 { // SEMVMX
				return fmt.Sprintf("semaphore set %d holds the value %d, above SEMVMX", sm.ID, v)
			}
		}
	}
	for _, q := range s.Msg {
		perms, kinds = append(perms, q.IPCPerm), append(kinds, "msg")
		for _, m := range q.Messages {
			if m.Type <= 0 {
				return fmt.Sprintf("message queue %d holds a message of type %d", q.ID, m.Type)
			}
		}
	}
	ids, keys := map[string]bool{}, map[string]bool{}
	for i, p := range perms {
		id, key := fmt.Sprintf("%s:%d", kinds[i], p.ID), fmt.Sprintf("%s:%d", kinds[i], p.Key)
		if p.ID < 0 || ids[id] || (p.Key != 0 && keys[key]) {
			return fmt.Sprintf("%s id %d (key %#x) is negative or appears twice", kinds[i], p.ID, uint32(p.Key))
		}
		ids[id], keys[key] = true, true
	}
	size := func(id int) (uint64, bool) {
		if sh := segs[id]; sh != nil {
			return sh.Size, true
		}
		return 0, false
	}
	for _, p := range c.Processes {
		if i, msg := SysVAttachError(p.VMAs, size); msg != "" {
			return fmt.Sprintf("pid %d vma %#x-%#x: %s", p.Task.Pid, p.VMAs[i].Start, p.VMAs[i].End, msg)
		}
	}
	return ""
}

// SysVAttachError says what is wrong with the SysV attachments among a
// process's vmas (sorted by address), and at which vma ("" if nothing).
// Restore recreates an attachment with one shmat(2) of the whole segment,
// so each must be whole: a run of adjacent VMAs of the same segment, the
// first at offset 0 (Pgoff), each continuing the previous, covering the
// segment's size rounded up to pages (mprotect may have split it; a
// partial munmap or mremap leaves something else). size gives a segment's
// size by shmid, false for a segment unknown.
func SysVAttachError(vmas []VMA, size func(id int) (uint64, bool)) (int, string) {
	open, end := -1, uint64(0) // the attachment being followed and where it must end
	for i := range vmas {
		v := &vmas[i]
		if v.SysVShmid == nil {
			if open >= 0 {
				return open, "a SysV attachment that does not cover its whole segment (partly unmapped?)"
			}
			continue
		}
		id := *v.SysVShmid
		sz, ok := size(id)
		if !ok {
			return i, fmt.Sprintf("attaches the unknown SysV segment %d", id)
		}
		if !v.Has(VMAShared) || v.File != nil || v.Shmem != 0 || v.Special != "" || v.Pgoff%PageSize != 0 {
			return i, fmt.Sprintf("is not a plain shared mapping of SysV segment %d", id)
		}
		switch {
		case v.Pgoff == 0:
			if open >= 0 {
				return open, "a SysV attachment that does not cover its whole segment (partly unmapped?)"
			}
			open, end = i, v.Start+(sz+PageSize-1)&^(PageSize-1)
		case open < 0 || *vmas[open].SysVShmid != id || vmas[i-1].End != v.Start || vmas[open].Start+v.Pgoff != v.Start:
			return i, fmt.Sprintf("maps SysV segment %d from offset %#x, not as part of a whole attachment (partly unmapped or moved?)", id, v.Pgoff)
		}
		if v.End > end {
			return i, fmt.Sprintf("extends past the end of SysV segment %d", id)
		}
		if v.End == end {
			open = -1
		}
	}
	if open >= 0 {
		return open, "a SysV attachment that does not cover its whole segment (partly unmapped?)"
	}
	return -1, ""
}

func loadProcess(dir string, pid int, fileIDs map[int]bool) (*Process, error) {
	p := &Process{}
	name := CoreFile(pid)
	recs, err := readFile(dir, name, KindCore)
	if err != nil {
		return nil, err
	}
	if len(recs) < 1 {
		return nil, &FormatError{name, headerSize, "expected a task record"}
	}
	if err := expect(name, recs[0], TagTask, &p.Task); err != nil {
		return nil, err
	}
	for _, si := range p.Task.SharedPending {
		if len(si) != SiginfoSize {
			return nil, &FormatError{name, recs[0].Offset, fmt.Sprintf("a pending signal is %d bytes, not %d", len(si), SiginfoSize)}
		}
	}
	if p.Task.Pid != pid {
		return nil, &FormatError{name, recs[0].Offset, fmt.Sprintf("task record is for pid %d", p.Task.Pid)}
	}
	if p.Task.Zombie {
		if len(recs) != 1 {
			return nil, &FormatError{name, recs[1].Offset, "a zombie has no threads"}
		}
		return p, nil
	}
	if len(recs) < 2 {
		return nil, &FormatError{name, headerSize, "expected a task record and at least one thread"}
	}
	for _, r := range recs[1:] {
		var t Thread
		if err := expect(name, r, TagThread, &t); err != nil {
			return nil, err
		}
		for _, si := range t.Pending {
			if len(si) != SiginfoSize {
				return nil, &FormatError{name, r.Offset, fmt.Sprintf("a pending signal of thread %d is %d bytes, not %d", t.Tid, len(si), SiginfoSize)}
			}
		}
		if msg := checkXState(&t); msg != "" {
			return nil, &FormatError{name, r.Offset, msg}
		}
		p.Threads = append(p.Threads, t)
	}

	name = MMFile(pid)
	if recs, err = readFile(dir, name, KindMM); err != nil {
		return nil, err
	}
	if len(recs) < 1 {
		return nil, &FormatError{name, headerSize, "missing mm record"}
	}
	if err := expect(name, recs[0], TagMM, &p.MM); err != nil {
		return nil, err
	}
	var prevEnd uint64
	for _, r := range recs[1:] {
		var v VMA
		if err := expect(name, r, TagVMA, &v); err != nil {
			return nil, err
		}
		if v.Start >= v.End || v.Start%PageSize != 0 || v.End%PageSize != 0 || v.Start < prevEnd {
			return nil, &FormatError{name, r.Offset, fmt.Sprintf("bad vma %#x-%#x", v.Start, v.End)}
		}
		switch v.Special {
		case "", SpecialVdso, SpecialVvar, SpecialVvarVclock, SpecialHeap, SpecialStack:
		default:
			return nil, &FormatError{name, r.Offset, fmt.Sprintf("vma %#x-%#x: unknown special area %q", v.Start, v.End, v.Special)}
		}
		if v.Special != "" && v.Special != SpecialHeap && v.Special != SpecialStack && (v.File != nil || v.Shmem != 0) {
			return nil, &FormatError{name, r.Offset, fmt.Sprintf("vma %#x-%#x: a %s area with a file", v.Start, v.End, v.Special)}
		}
		prevEnd = v.End
		p.VMAs = append(p.VMAs, v)
	}

	name = PageMapFile(pid)
	if recs, err = readFile(dir, name, KindPageMap); err != nil {
		return nil, err
	}
	pagesSize, err := pagesFileSize(dir, pid)
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		var pr PageRun
		if err := expect(name, r, TagPageRun, &pr); err != nil {
			return nil, err
		}
		p.PageMap = append(p.PageMap, pr)
	}
	bad, msg, next := checkPageMap(p.VMAs, p.PageMap)
	if bad >= 0 {
		return nil, &FormatError{name, recs[bad].Offset, msg}
	}
	if uint64(pagesSize) != next {
		return nil, &FormatError{PagesFile(pid), pagesSize, fmt.Sprintf("pages file has %d bytes, the page map describes %d", pagesSize, next)}
	}

	name = FdsFile(pid)
	if recs, err = readFile(dir, name, KindFds); err != nil {
		return nil, err
	}
	if len(recs) < 1 {
		return nil, &FormatError{name, headerSize, "missing fs record"}
	}
	if err := expect(name, recs[0], TagFS, &p.FS); err != nil {
		return nil, err
	}
	seen := map[int]bool{}
	for _, r := range recs[1:] {
		var fd Fd
		if err := expect(name, r, TagFd, &fd); err != nil {
			return nil, err
		}
		if fd.Fd < 0 || seen[fd.Fd] || !fileIDs[fd.FileID] {
			return nil, &FormatError{name, r.Offset, fmt.Sprintf("bad fd %d (file id %d)", fd.Fd, fd.FileID)}
		}
		seen[fd.Fd] = true
		p.Fds = append(p.Fds, fd)
	}
	return p, nil
}

func insideVMA(vmas []VMA, start, end uint64) bool {
	i := sort.Search(len(vmas), func(i int) bool { return vmas[i].End > start })
	return i < len(vmas) && vmas[i].Start <= start && end <= vmas[i].End
}

func expect(name string, r Record, tag Tag, v any) error {
	if r.Tag != tag {
		return &FormatError{name, r.Offset, fmt.Sprintf("unexpected %s record (expected %s)", tagName(r.Tag), tagName(tag))}
	}
	return unmarshal(name, r, v)
}

// missing explains why the file name of the image dir cannot be found: the
// directory itself does not exist or is not one, or it lacks the file.
func missing(dir, name string) error {
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return &pathError{fmt.Sprintf("image directory %s does not exist", dir), os.ErrNotExist}
	case err == nil && !st.IsDir():
		return fmt.Errorf("image %s is not a directory", dir)
	}
	return &pathError{fmt.Sprintf("image %s has no %s: not a cr image, or an incomplete one", dir, name), os.ErrNotExist}
}

func readFile(dir, name string, kind Kind) ([]Record, error) {
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return nil, missing(dir, name)
		}
		return nil, err
	}
	return decode(name, data, kind)
}

// Decode checks and splits one framed file's bytes into records (exposed for
// tools and fuzzing).
func Decode(name string, data []byte, kind Kind) ([]Record, error) { return decode(name, data, kind) }

func pagesFileSize(dir string, pid int) (int64, error) {
	f, err := OpenPages(dir, pid)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// OpenPages opens pages-PID.img and checks its header.
func OpenPages(dir string, pid int) (*os.File, error) { return OpenPagesNamed(dir, PagesFile(pid)) }

// OpenPagesNamed opens a pages file and checks its header.
func OpenPagesNamed(dir, name string) (*os.File, error) {
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return nil, missing(dir, name)
		}
		return nil, err
	}
	h := make([]byte, PageSize)
	if _, err := io.ReadFull(f, h); err != nil {
		f.Close()
		return nil, &FormatError{name, 0, "file is shorter than its header page"}
	}
	if err := checkHeader(name, h, KindPages); err != nil {
		f.Close()
		return nil, err
	}
	for _, b := range h[headerSize:] {
		if b != 0 {
			f.Close()
			return nil, &FormatError{name, headerSize, "header page is not zero-padded"}
		}
	}
	return f, nil
}

// VerifyPages reads pages-PID.img and checks every run's CRC.
func VerifyPages(dir string, p *Process) error {
	f, err := OpenPages(dir, p.Task.Pid)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 4<<20)
	for _, r := range p.PageMap {
		if r.InParent {
			continue
		}
		crc := uint32(0)
		left := int64(r.Pages * PageSize)
		off := int64(r.Offset)
		for left > 0 {
			n := int64(len(buf))
			if n > left {
				n = left
			}
			if _, err := f.ReadAt(buf[:n], off); err != nil {
				return &FormatError{PagesFile(p.Task.Pid), off, "pages file is cut short"}
			}
			crc = UpdateCRC(crc, buf[:n])
			off += n
			left -= n
		}
		if crc != r.CRC {
			return &FormatError{PagesFile(p.Task.Pid), int64(r.Offset), fmt.Sprintf("checksum mismatch in the pages of %#x (+%d pages)", r.Addr, r.Pages)}
		}
	}
	return nil
}

// VerifyShmem checks the shared memory objects' runs against
// shmem-pages.img: contiguous offsets, the file's size, every run's CRC.
func VerifyShmem(dir string, objs []Shmem) error {
	if len(objs) == 0 {
		return nil
	}
	runs := make([]runsOf, len(objs))
	for i, sh := range objs {
		runs[i] = runsOf{what: fmt.Sprintf("shared memory object %d", sh.ID), size: sh.Size, runs: sh.Runs}
	}
	return verifyRuns(dir, ShmemPagesFile, FilesFile, runs)
}

// VerifySysVShm checks the SysV segments' runs against
// sysv-shm-pages.img: contiguous offsets, the file's size, every run's CRC.
func VerifySysVShm(dir string, s *SysVIPC) error {
	if s == nil || len(s.Shm) == 0 {
		return nil
	}
	var objs []runsOf
	for _, sh := range s.Shm {
		objs = append(objs, runsOf{fmt.Sprintf("SysV segment %d", sh.ID), int64(sh.Size), sh.Runs})
	}
	return verifyRuns(dir, SysVShmPagesFile, IPCFile, objs)
}

// runsOf names an object whose contents are runs of a shared pages file.
type runsOf struct {
	what string
	size int64
	runs []PageRun
}

// verifyRuns checks the runs of objs against the pages file name: offsets
// contiguous from the header page on, inside each object, the file's size,
// every run's CRC. meta names the file holding the runs.
func verifyRuns(dir, name, meta string, objs []runsOf) error {
	f, err := OpenPagesNamed(dir, name)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	next := uint64(PageSize)
	buf := make([]byte, 1<<20)
	for _, o := range objs {
		for _, r := range o.runs {
			if r.Offset != next || r.Pages == 0 || r.Pages > (1<<40) || r.Addr%PageSize != 0 || int64(r.Addr+r.Pages*PageSize) > (o.size+PageSize-1)&^(PageSize-1) {
				return &FormatError{meta, 0, "bad run of " + o.what}
			}
			crc := uint32(0)
			for off, left := int64(r.Offset), int64(r.Pages*PageSize); left > 0; {
				n := min(int64(len(buf)), left)
				if _, err := f.ReadAt(buf[:n], off); err != nil {
					return &FormatError{name, off, "file is cut short"}
				}
				crc = UpdateCRC(crc, buf[:n])
				off += n
				left -= n
			}
			if crc != r.CRC {
				return &FormatError{name, int64(r.Offset), "checksum mismatch in " + o.what}
			}
			next += r.Pages * PageSize
		}
	}
	if uint64(st.Size()) != next {
		return &FormatError{name, st.Size(), fmt.Sprintf("file has %d bytes, the runs describe %d", st.Size(), next)}
	}
	return nil
}

// SiginfoSize is the size of a saved siginfo_t.
const SiginfoSize = 128

// checkFile says what is wrong with a file record ("" if nothing) that
// concerns every kind of file: a type. What each kind's record holds is
// checked by its kind (pkg/files, Validate; files.Load is Load with it).
func checkFile(f *File) string {
	if f.Type == "" {
		return "a file without a type"
	}
	return ""
}

// pathError is a message about the image directory that says everything
// itself, wrapping os.ErrNotExist or os.ErrExist for errors.Is.
type pathError struct {
	msg string
	err error
}

func (e *pathError) Error() string { return e.msg }
func (e *pathError) Unwrap() error { return e.err }
