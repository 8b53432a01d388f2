package files

import (
	"fmt"

	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// chardev: a character device other than a terminal (/dev/null,
// /dev/urandom, ...), record image.File with Rdev. Made again by opening
// its path; restore refuses a path that is now another device.
type chardev struct{}

func (chardev) Type() string { return image.FileChr }

func (chardev) Recognize(p *Probe) bool { return p.IsPath() && p.Mode() == unix.S_IFCHR }

func (chardev) Dump(p *Probe, f *image.File) error {
	st, err := p.Stat()
	if err != nil {
		return err
	}
	f.Rdev = st.Rdev
	return nil
}

func (chardev) Validate(*image.Checkpoint, *image.File) error { return nil }

func (chardev) Check(_ Env, f *image.File) error {
	st, err := checkOnDisk(f, false)
	if err != nil {
		return err
	}
	if st.Rdev != f.Rdev {
		return &ChangedFileError{Path: f.Ident.Path, What: fmt.Sprintf("device %d:%d is now %d:%d", unix.Major(f.Rdev), unix.Minor(f.Rdev), unix.Major(st.Rdev), unix.Minor(st.Rdev))}
	}
	return nil
}

func (chardev) Open(_ *Opener, f *image.File) (int, error) { return openPath(reopenPath(f), f.Flags) }
