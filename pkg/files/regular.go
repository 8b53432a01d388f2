package files

import (
	"fmt"
	"strings"

	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// regular: a regular file opened by path (also a /proc file: see
// procfs.go), record image.File itself (flags, offset, identity). Made
// again by opening the path with the flags and seeking to the offset; a
// file that changed since the dump is reopened as it is now (-v notes it).
// A deleted file and a memfd_secret area are refused.
type regular struct{}

// secretmemMagic is memfd_secret's filesystem (include/uapi/linux/magic.h).
const secretmemMagic = 0x5345434d

func (regular) Type() string { return image.FileReg }

func (regular) Recognize(p *Probe) bool { return p.IsPath() && p.Mode() == unix.S_IFREG }

func (regular) Dump(p *Probe, f *image.File) error {
	if fsMagic(p.Link) == secretmemMagic {
		return &UnsupportedError{Fd: p.Fd, What: "a memfd_secret area"}
	}
	if strings.HasSuffix(p.Target, " (deleted)") {
		return &UnsupportedError{Fd: p.Fd, What: "the deleted file " + strings.TrimSuffix(p.Target, " (deleted)")}
	}
	return nil
}

func (regular) Validate(*image.Checkpoint, *image.File) error { return nil }

func (regular) Check(env Env, f *image.File) error {
	st, err := checkOnDisk(f, false)
	if err != nil {
		return err
	}
	if st.Ino != f.Ident.Ino || st.Size != f.Ident.Size || st.Mtim.Nano() != f.Ident.MtimeNs {
		env.Logf("note: open file %s changed since the dump; it is reopened as it is now", f.Ident.Path)
	}
	return nil
}

func (regular) Open(_ *Opener, f *image.File) (int, error) {
	path := reopenPath(f)
	fd, err := openPath(path, f.Flags)
	if err != nil {
		return 0, err
	}
	if f.Pos != 0 {
		if _, err := unix.Seek(fd, f.Pos, 0); err != nil {
			unix.Close(fd)
			return 0, fmt.Errorf("seek %s to %d: %w", path, f.Pos, err)
		}
	}
	return fd, nil
}
