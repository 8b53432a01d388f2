package files

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// eventfd: an eventfd(2) counter ("anon_inode:[eventfd]"), record
// image.Eventfd. Dumped from its fdinfo ("eventfd-count: %16llx",
// "eventfd-semaphore: %d", fs/eventfd.c eventfd_show_fdinfo); made again
// with eventfd(2) and a write(2) of the count.
type eventfd struct{}

func (eventfd) Type() string { return image.FileEventfd }

func (eventfd) Recognize(p *Probe) bool { return p.Target == "anon_inode:[eventfd]" }

func (eventfd) Dump(p *Probe, f *image.File) error {
	ev := &image.Eventfd{}
	for _, line := range strings.Split(p.Info, "\n") {
		k, v, _ := strings.Cut(line, ":")
		v = strings.TrimSpace(v)
		switch k {
		case "eventfd-count":
			ev.Count, _ = strconv.ParseUint(v, 16, 64)
		case "eventfd-semaphore":
			ev.Semaphore = v == "1"
		}
	}
	f.Eventfd = ev
	return nil
}

func (eventfd) Validate(_ *image.Checkpoint, f *image.File) error {
	if err := need(f.Eventfd != nil, f, "eventfd record"); err != nil {
		return err
	}
	// The counter's largest value is 0xfffffffffffffffe (eventfd(2)).
	if f.Eventfd.Count == ^uint64(0) {
		return fmt.Errorf("eventfd counter %#x is above the largest value", f.Eventfd.Count)
	}
	return nil
}

func (eventfd) Open(_ *Opener, f *image.File) (int, error) {
	flags := unix.EFD_CLOEXEC
	if f.Eventfd.Semaphore {
		flags |= unix.EFD_SEMAPHORE
	}
	fd, err := unix.Eventfd(0, flags)
	if err != nil {
		return 0, fmt.Errorf("eventfd: %w", err)
	}
	if f.Eventfd.Count > 0 {
		if _, err = unix.Write(fd, binary.LittleEndian.AppendUint64(nil, f.Eventfd.Count)); err != nil {
			unix.Close(fd)
			return 0, fmt.Errorf("set eventfd counter: %w", err)
		}
	}
	if err := SetFlags(fd, f.Flags); err != nil {
		unix.Close(fd)
		return 0, err
	}
	return fd, nil
}
