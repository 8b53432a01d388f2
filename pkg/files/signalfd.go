package files

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// signalfd: a signalfd(2) ("anon_inode:[signalfd]"), record image.File
// with Sigmask: the signals it accepts, from its fdinfo ("sigmask:
// %016llx", fs/signalfd.c signalfd_show_fdinfo). A signalfd reads the
// pending signals of the task that reads it, not of its creator, so cr
// makes it in itself with signalfd4(2) and passes it in; the signals
// themselves are the task's pending signals, restored with the task.
// (`script`, systemd and many event loops hold one.)
type signalfd struct{}

func (signalfd) Type() string { return image.FileSignalfd }

func (signalfd) Recognize(p *Probe) bool { return p.Target == "anon_inode:[signalfd]" }

func (signalfd) Dump(p *Probe, f *image.File) error {
	for _, line := range strings.Split(p.Info, "\n") {
		if v, ok := strings.CutPrefix(line, "sigmask:"); ok {
			m, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return fmt.Errorf("fd %d: signalfd sigmask %q: %w", p.Fd, v, err)
			}
			f.Sigmask = &m
			return nil
		}
	}
	return fmt.Errorf("fd %d: no sigmask line in the signalfd's fdinfo", p.Fd)
}

func (signalfd) Validate(_ *image.Checkpoint, f *image.File) error {
	return need(f.Sigmask != nil, f, "signal mask")
}

func (signalfd) Open(_ *Opener, f *image.File) (int, error) {
	set := unix.Sigset_t{Val: [16]uint64{*f.Sigmask}}
	fd, err := unix.Signalfd(-1, &set, unix.SFD_CLOEXEC)
	if err != nil {
		return 0, fmt.Errorf("signalfd of mask %#x: %w", *f.Sigmask, err)
	}
	if err := SetFlags(fd, f.Flags); err != nil {
		unix.Close(fd)
		return 0, err
	}
	return fd, nil
}

func (signalfd) Describe(f *image.File) string {
	if f.Sigmask == nil {
		return "signalfd"
	}
	return fmt.Sprintf("signalfd (mask %#x)", *f.Sigmask)
}
