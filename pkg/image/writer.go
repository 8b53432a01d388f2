package image

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Writer creates an image directory atomically: everything is written into
// a temporary directory beside the target, which is renamed into place by
// Commit. Abort removes it.
type Writer struct {
	Dir   string // the final directory
	tmp   string
	sync  bool
	open  []*os.File
	owner *os.File // the flock'd owner file inside tmp (see RemoveStale)
	abort <-chan struct{}
	// progress, if set, is told the bytes of every write to a process's
	// pages file (SetProgress).
	progress func(n int64)
	// pages: the pages files written so far, by name, so that WriteMeta can
	// check a page map against the bytes written for it.
	pages map[string]*PagesWriter
}

// ErrAborted is returned by PagesWriter.Write once the abort channel given
// to SetAbort is closed.
var ErrAborted = errors.New("aborted")

// ownerFile is the file inside a temporary image directory that its writer
// holds an exclusive flock(2) on for as long as it lives. It is removed
// just before Commit's rename, so a committed image never has it.
const ownerFile = ".cr-owner"

// tmpInfix separates an image directory's name from the writer's pid in
// the temporary directory's name: ".NAME.tmp-PID-RANDOM".
const tmpInfix = ".tmp-"

// Create starts an image that will appear at dir. dir must not exist or be
// an empty directory. With sync, Commit fsyncs every file and the directory.
func Create(dir string, sync bool) (*Writer, error) {
	dir = filepath.Clean(dir)
	if err := CheckTarget(dir); err != nil {
		return nil, err
	}
	parent := filepath.Dir(dir)
	tmp := filepath.Join(parent, "."+filepath.Base(dir)+tmpInfix+strconv.Itoa(os.Getpid())+"-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return nil, fmt.Errorf("create image directory: %w", err)
	}
	owner, err := os.OpenFile(filepath.Join(tmp, ownerFile), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		if err = unix.Flock(int(owner.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			owner.Close()
		}
	}
	if err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("create image directory: lock %s: %w", tmp, err)
	}
	return &Writer{Dir: dir, tmp: tmp, sync: sync, owner: owner}, nil
}

// SetAbort makes every later PagesWriter.Write fail with ErrAborted once ch
// is closed (a dump interrupted by a signal stops inside its page copy).
func (w *Writer) SetAbort(ch <-chan struct{}) { w.abort = ch }

// SetProgress makes every later write to a pages-PID.img file (Pages, not
// PagesNamed) call fn with the number of bytes written.
func (w *Writer) SetProgress(fn func(n int64)) { w.progress = fn }

// RemoveStale removes the temporary image directories beside dir (in its
// parent directory) whose writer is gone: a cr killed by SIGKILL leaves
// one. A writer is gone when the pid in the directory's name
// (".NAME.tmp-PID-RANDOM") no longer exists, or when nobody holds the flock
// on the directory's owner file. It returns the directories removed.
// Directories of other names, and those of live writers, are left alone.
func RemoveStale(dir string) ([]string, error) {
	parent := filepath.Dir(filepath.Clean(dir))
	ents, err := os.ReadDir(parent)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("look for stale temporary images in %s: %w", parent, err)
	}
	var removed []string
	for _, e := range ents {
		name := e.Name()
		i := strings.LastIndex(name, tmpInfix)
		if !e.IsDir() || !strings.HasPrefix(name, ".") || i < 0 {
			continue
		}
		pidStr, _, ok := strings.Cut(name[i+len(tmpInfix):], "-")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil || pid <= 0 {
			continue // not a name Create makes
		}
		path := filepath.Join(parent, name)
		if !writerGone(path, pid) {
			continue
		}
		if err := os.RemoveAll(path); err != nil {
			return removed, fmt.Errorf("remove stale temporary image %s: %w", path, err)
		}
		removed = append(removed, path)
	}
	return removed, nil
}

// writerGone tells whether the writer of the temporary directory path,
// whose name says it was made by pid, has gone away.
func writerGone(path string, pid int) bool {
	if err := unix.Kill(pid, 0); errors.Is(err, unix.ESRCH) {
		return true
	}
	// The pid lives: it is the writer, or the pid was reused. Only the
	// owner file's lock tells; a directory without one (its writer is
	// between mkdir and flock, or between unlink and rename) stays.
	f, err := os.Open(filepath.Join(path, ownerFile))
	if err != nil {
		return false
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return false
	}
	// Unlocked: the writer died, unless it is just creating it (a new
	// file). A file older than a few seconds has lost its writer.
	st, err := f.Stat()
	return err == nil && time.Since(st.ModTime()) > 10*time.Second
}

// CheckTarget tells whether an image could be created at dir: it must not
// exist, or be an empty directory, and its parent must exist.
func CheckTarget(dir string) error {
	if ents, err := os.ReadDir(dir); err == nil {
		if len(ents) > 0 {
			return &pathError{fmt.Sprintf("image directory %s already exists and is not empty", dir), os.ErrExist}
		}
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("image directory %s: %w", dir, err)
	}
	if st, err := os.Stat(filepath.Dir(filepath.Clean(dir))); err != nil {
		return fmt.Errorf("image directory %s: %w", dir, err)
	} else if !st.IsDir() {
		return fmt.Errorf("image directory %s: %s is not a directory", dir, filepath.Dir(dir))
	}
	return nil
}

// TempDir is where files are written until Commit.
func (w *Writer) TempDir() string { return w.tmp }

func (w *Writer) create(name string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(w.tmp, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create image file: %w", err)
	}
	return f, nil
}

func (w *Writer) writeFile(name string, kind Kind, fill func(e *encoder)) error {
	f, err := w.create(name)
	if err != nil {
		return err
	}
	e := newEncoder(f, kind)
	fill(e)
	err = e.close()
	if err == nil && w.sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// WriteMeta writes every metadata file of c (pages are written by Pages).
func (w *Writer) WriteMeta(c *Checkpoint) error {
	if err := w.writeFile(InventoryFile, KindInventory, func(e *encoder) { e.put(TagInventory, &c.Inventory) }); err != nil {
		return err
	}
	if err := w.writeFile(FilesFile, KindFiles, func(e *encoder) {
		for i := range c.Files {
			e.put(TagFile, &c.Files[i])
		}
		for i := range c.Shmem {
			e.put(TagShmem, &c.Shmem[i])
		}
	}); err != nil {
		return err
	}
	if !c.IPC.Empty() {
		if bad := checkIPC(c); bad != "" {
			return fmt.Errorf("sysv ipc: %s", bad)
		}
		if err := w.writeFile(IPCFile, KindIPC, func(e *encoder) {
			for i := range c.IPC.Shm {
				e.put(TagSysVShm, &c.IPC.Shm[i])
			}
			for i := range c.IPC.Sem {
				e.put(TagSysVSem, &c.IPC.Sem[i])
			}
			for i := range c.IPC.Msg {
				e.put(TagSysVMsg, &c.IPC.Msg[i])
			}
		}); err != nil {
			return err
		}
	}
	for _, p := range c.Processes {
		pid := p.Task.Pid
		if err := w.writeFile(CoreFile(pid), KindCore, func(e *encoder) {
			e.put(TagTask, &p.Task)
			for i := range p.Threads {
				e.put(TagThread, &p.Threads[i])
			}
		}); err != nil {
			return err
		}
		if p.Task.Zombie {
			continue // a zombie has only its task record
		}
		if err := w.writeFile(MMFile(pid), KindMM, func(e *encoder) {
			e.put(TagMM, &p.MM)
			for i := range p.VMAs {
				e.put(TagVMA, &p.VMAs[i])
			}
		}); err != nil {
			return err
		}
		// Refuse what Load would refuse: an image cr cannot read back is a
		// cr bug, and must not cost the process.
		if bad, msg, size := checkPageMap(p.VMAs, p.PageMap); bad >= 0 {
			return fmt.Errorf("page map of pid %d (run %d of %d): %s", pid, bad, len(p.PageMap), msg)
		} else if pw := w.pages[PagesFile(pid)]; pw != nil && uint64(pw.off) != size {
			return fmt.Errorf("page map of pid %d describes %d bytes of %s, %d were written", pid, size, PagesFile(pid), pw.off)
		}
		if err := w.writeFile(PageMapFile(pid), KindPageMap, func(e *encoder) {
			for i := range p.PageMap {
				e.put(TagPageRun, &p.PageMap[i])
			}
		}); err != nil {
			return err
		}
		if err := w.writeFile(FdsFile(pid), KindFds, func(e *encoder) {
			e.put(TagFS, &p.FS)
			for i := range p.Fds {
				e.put(TagFd, &p.Fds[i])
			}
		}); err != nil {
			return err
		}
	}
	return nil
}

// PagesWriter appends runs of pages to pages-PID.img.
type PagesWriter struct {
	f        *os.File
	off      int64
	abort    <-chan struct{}
	progress func(n int64)
}

// Pages creates pages-PID.img and writes its header page.
func (w *Writer) Pages(pid int) (*PagesWriter, error) {
	pw, err := w.PagesNamed(PagesFile(pid))
	if pw != nil {
		pw.progress = w.progress
	}
	return pw, err
}

// PagesNamed creates a pages file of another name (shmem-pages.img).
func (w *Writer) PagesNamed(name string) (*PagesWriter, error) {
	f, err := w.create(name)
	if err != nil {
		return nil, err
	}
	w.open = append(w.open, f)
	hdr := make([]byte, PageSize)
	copy(hdr, header(KindPages))
	if _, err := f.Write(hdr); err != nil {
		return nil, fmt.Errorf("write %s: %w", name, err)
	}
	pw := &PagesWriter{f: f, off: PageSize, abort: w.abort}
	if w.pages == nil {
		w.pages = map[string]*PagesWriter{}
	}
	w.pages[name] = pw
	return pw, nil
}

// Offset is where the next run will be written.
func (p *PagesWriter) Offset() int64 { return p.off }

// Write appends data (whole pages) to the file.
func (p *PagesWriter) Write(data []byte) error {
	if len(data)%PageSize != 0 {
		return fmt.Errorf("pages write of %d bytes is not page-sized", len(data))
	}
	if p.abort != nil {
		select {
		case <-p.abort:
			return ErrAborted
		default:
		}
	}
	n, err := p.f.WriteAt(data, p.off)
	p.off += int64(n)
	if p.progress != nil && n > 0 {
		p.progress(int64(n))
	}
	if err != nil {
		return fmt.Errorf("write pages: %w", err)
	}
	return nil
}

// Commit closes everything and moves the image into place.
func (w *Writer) Commit() error {
	for _, f := range w.open {
		if w.sync {
			if err := f.Sync(); err != nil {
				return fmt.Errorf("sync %s: %w", f.Name(), err)
			}
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	w.open = nil
	if w.sync {
		if err := syncDir(w.tmp); err != nil {
			return err
		}
	}
	// The owner file goes first (a committed image has none); the lock is
	// held until the rename is done.
	if err := os.Remove(filepath.Join(w.tmp, ownerFile)); err != nil {
		return fmt.Errorf("move image into place: %w", err)
	}
	// rename(2) itself, not os.Rename, which refuses to replace the empty
	// directory that Create accepts as a target.
	err := syscall.Rename(w.tmp, w.Dir)
	w.owner.Close()
	w.owner = nil
	if err != nil {
		return fmt.Errorf("move image into place: %w", err)
	}
	if w.sync {
		return syncDir(filepath.Dir(w.Dir))
	}
	return nil
}

// Abort removes everything written so far.
func (w *Writer) Abort() {
	for _, f := range w.open {
		f.Close()
	}
	w.open = nil
	os.RemoveAll(w.tmp)
	if w.owner != nil {
		w.owner.Close()
		w.owner = nil
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

var _ io.Closer = (*os.File)(nil)
