package files

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// signalfd: a signalfd(2) ("anon_inode:[signalfd]"), record image.Signalfd.
// Dumped from its fdinfo ("sigmask:\t%016llx", fs/signalfd.c
// signalfd_show_fdinfo: bit n-1 for signal n) and its status flags
// (O_NONBLOCK); made again with signalfd(2). The signals a signalfd reports
// are the reading task's pending signals, which the dump leaves pending
// (nothing reads the signalfd) and core-PID.img carries over.
type signalfd struct{}

func (signalfd) Type() string { return image.FileSignalfd }

func (signalfd) Recognize(p *Probe) bool { return p.Target == "anon_inode:[signalfd]" }

func (signalfd) Dump(p *Probe, f *image.File) error {
	for _, line := range strings.Split(p.Info, "\n") {
		if v, ok := strings.CutPrefix(line, "sigmask:"); ok {
			m, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return fmt.Errorf("fd %d: signalfd mask %q: %w", p.Fd, v, err)
			}
			f.Signalfd = &image.Signalfd{Mask: m}
			return nil
		}
	}
	return fmt.Errorf("fd %d: a signalfd without a sigmask line in its fdinfo", p.Fd)
}

func (signalfd) Validate(_ *image.Checkpoint, f *image.File) error {
	return need(f.Signalfd != nil, f, "mask")
}

func (signalfd) Open(_ *Opener, f *image.File) (int, error) {
	set := unix.Sigset_t{Val: [16]uint64{f.Signalfd.Mask}}
	flags := unix.SFD_CLOEXEC
	if f.Flags&unix.O_NONBLOCK != 0 {
		flags |= unix.SFD_NONBLOCK
	}
	fd, err := unix.Signalfd(-1, &set, flags)
	if err != nil {
		return 0, fmt.Errorf("signalfd mask %#x: %w", f.Signalfd.Mask, err)
	}
	return fd, nil
}

func (signalfd) Describe(f *image.File) string {
	if f.Signalfd == nil {
		return "signalfd"
	}
	return fmt.Sprintf("signalfd of signals %s", sigList(f.Signalfd.Mask))
}

// sigList names the signals of a mask (bit n-1 for signal n): "10,34".
func sigList(mask uint64) string {
	var s []string
	for i := 0; i < 64; i++ {
		if mask&(1<<i) != 0 {
			s = append(s, strconv.Itoa(i+1))
		}
	}
	if s == nil {
		return "none"
	}
	return strings.Join(s, ",")
}
