package files

import (
	"fmt"
	"strings"

	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// memfd: an fd of a memfd_create(2) file ("/memfd:NAME (deleted)"), record
// image.File with Shmem naming the shared memory object (image.Shmem: its
// name, size, seals and contents, saved once however many processes map or
// hold it: pkg/dump dumpShmem, pkg/memdump). Restore makes the object once
// (Env.Shmem) and gives each description its own open of it through
// /proc/self/fd, with the flags and offset.
type memfd struct{}

func (memfd) Type() string { return image.FileMemfd }

func (memfd) Recognize(p *Probe) bool {
	return p.Mode() == unix.S_IFREG && strings.HasPrefix(p.Target, "/memfd:")
}

func (memfd) Dump(p *Probe, f *image.File) error {
	f.Shmem = p.Ident.Ino
	return nil
}

func (memfd) Validate(c *image.Checkpoint, f *image.File) error {
	if err := need(f.Shmem != 0, f, "shared memory object"); err != nil {
		return err
	}
	for i := range c.Shmem {
		if c.Shmem[i].ID == f.Shmem {
			return nil
		}
	}
	return fmt.Errorf("memfd of the unknown shared memory object %d", f.Shmem)
}

func (memfd) Open(o *Opener, f *image.File) (int, error) {
	obj, err := o.Env.Shmem(f.Shmem)
	if err != nil {
		return 0, err
	}
	// A description of its own: reopen the object through /proc.
	fd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", obj), int(f.Flags)&^(unix.O_CREAT|unix.O_EXCL|unix.O_TRUNC)|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("reopen memfd: %w", err)
	}
	if f.Pos != 0 {
		if _, err := unix.Seek(fd, f.Pos, 0); err != nil {
			unix.Close(fd)
			return 0, err
		}
	}
	return fd, nil
}
