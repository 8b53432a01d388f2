package files

import (
	"fmt"
	"strings"

	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// fifo: a named pipe (mkfifo(3)) opened by path, record image.Pipe as for
// a pipe (its ID is the FIFO's inode; the first description of each FIFO
// carries the bytes that sat in it, read through a reader of our own, with
// packet boundaries when one of its descriptions is in packet mode). Restore
// opens the FIFO read-write itself first (so that no open blocks waiting for
// a peer), refills it, keeps that fd until the end, and reopens each
// description by path with its flags. A deleted FIFO is refused.
type fifo struct{}

func (fifo) Type() string { return image.FileFIFO }

func (fifo) Recognize(p *Probe) bool { return p.IsPath() && p.Mode() == unix.S_IFIFO }

func (fifo) Dump(p *Probe, f *image.File) error {
	if strings.HasSuffix(p.Target, " (deleted)") {
		return &UnsupportedError{Fd: p.Fd, What: "a deleted FIFO (" + p.Target + ")"}
	}
	f.Pipe = &image.Pipe{ID: p.Ident.Ino}
	return nil
}

// Resolve saves what sits in each FIFO, once, with its first description.
func (fifo) Resolve(c *Collector, files []*image.File) error {
	direct := map[uint64]bool{}
	for _, f := range files {
		if f.Flags&unix.O_DIRECT != 0 {
			direct[f.Pipe.ID] = true
		}
	}
	seen := map[uint64]bool{}
	for _, f := range files {
		if seen[f.Pipe.ID] {
			continue
		}
		seen[f.Pipe.ID] = true
		pid, fd := c.Owner(f.ID)
		data, size, chunks, err := peekFIFO(pid, fd, direct[f.Pipe.ID])
		if err != nil {
			return fmt.Errorf("fd %d of pid %d: read FIFO contents: %w", fd, pid, err)
		}
		f.Pipe.Data, f.Pipe.Size, f.Pipe.Chunks = data, size, chunks
	}
	return nil
}

func (fifo) Validate(_ *image.Checkpoint, f *image.File) error {
	if err := need(f.Pipe != nil, f, "pipe record"); err != nil {
		return err
	}
	return checkPipe(f.Pipe)
}

func (fifo) Check(_ Env, f *image.File) error {
	_, err := checkOnDisk(f, false)
	return err
}

// fifoState is, per FIFO inode, cr's read-write fd of it, kept open until
// the restore ends.
type fifoState map[uint64]int

func (k fifo) Open(o *Opener, f *image.File) (int, error) {
	st := stateOf[fifoState](o, k)
	if *st == nil {
		*st = fifoState{}
	}
	if _, ok := (*st)[f.Pipe.ID]; !ok {
		keep, err := unix.Open(f.Ident.Path, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return 0, fmt.Errorf("open FIFO %s: %w", f.Ident.Path, err)
		}
		(*st)[f.Pipe.ID] = keep
		o.Keep(keep)
		if f.Pipe.Size > 0 {
			if _, err := unix.FcntlInt(uintptr(keep), unix.F_SETPIPE_SZ, f.Pipe.Size); err != nil {
				return 0, fmt.Errorf("FIFO size %d: %w", f.Pipe.Size, err)
			}
		}
		if err := fillPipe(keep, f.Pipe, "FIFO "+f.Ident.Path); err != nil {
			return 0, err
		}
	}
	// open(2) refuses O_DIRECT on a FIFO (packet mode is set by fcntl):
	// SetFlags puts it on.
	fd, err := unix.Open(f.Ident.Path, int(f.Flags)&^(unix.O_CREAT|unix.O_EXCL|unix.O_TRUNC|unix.O_DIRECT)|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open FIFO %s: %w", f.Ident.Path, err)
	}
	if err := SetFlags(fd, f.Flags); err != nil {
		unix.Close(fd)
		return 0, err
	}
	return fd, nil
}

// peekFIFO reads what sits in a FIFO through a reader of our own (the
// task's description may be write-only); opening a reader disturbs no one.
func peekFIFO(pid, fd int, packets bool) ([]byte, int, []image.PipeChunk, error) {
	src, err := unix.Open(fmt.Sprintf("/proc/%d/fd/%d", pid, fd), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, 0, nil, err
	}
	defer unix.Close(src)
	return peek(src, packets)
}
