package files

import (
	"strings"

	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// opath: an O_PATH descriptor (open(2): "obtain a file descriptor that can
// be used ... to indicate a location in the filesystem tree"; systemd holds
// /etc/localtime this way), on any file with a path: a symlink itself
// (O_PATH|O_NOFOLLOW), a directory (often with O_DIRECTORY, a dirfd for
// the *at calls), a regular file, a device, a FIFO. Its fdinfo "flags:"
// show O_PATH (010000000) with O_NOFOLLOW and O_DIRECTORY as opened
// (build_open_flags in fs/open.c keeps O_PATH_FLAGS); there is no offset
// and no I/O. Record: image.File itself, type "opath". Restore reopens the
// path with the same flags, so that a symlink is the link again (O_NOFOLLOW)
// and O_DIRECTORY is kept (CRIU's files-reg.c loses it); before anything is
// made, the path must still name a file of the same type (lstat(2)).
type opath struct{}

// TypeOPath is the image type of an O_PATH descriptor (format 1.1 readers
// before it refuse it as an unknown type).
const TypeOPath = "opath"

func (opath) Type() string { return TypeOPath }

func (opath) Recognize(p *Probe) bool { return p.IsPath() && p.Flags&unix.O_PATH != 0 }

func (opath) Dump(p *Probe, f *image.File) error {
	if strings.HasSuffix(p.Target, " (deleted)") {
		return &UnsupportedError{Fd: p.Fd, What: "an O_PATH descriptor of the deleted file " + strings.TrimSuffix(p.Target, " (deleted)")}
	}
	if strings.HasPrefix(p.Target, "/memfd:") {
		return &UnsupportedError{Fd: p.Fd, What: "an O_PATH descriptor of a memfd (" + p.Target + ")"}
	}
	return nil
}

func (opath) Validate(_ *image.Checkpoint, f *image.File) error {
	return need(f.Flags&unix.O_PATH != 0, f, "O_PATH flag")
}

func (opath) Check(env Env, f *image.File) error {
	st, err := checkOnDisk(f, true)
	if err != nil {
		return err
	}
	if st.Ino != f.Ident.Ino || st.Dev != f.Ident.Dev {
		env.Logf("note: %s (O_PATH) is another file than at the dump; it is reopened as it is now", f.Ident.Path)
	}
	return nil
}

func (opath) Open(_ *Opener, f *image.File) (int, error) { return openPath(reopenPath(f), f.Flags) }
