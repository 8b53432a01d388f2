package files

import (
	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// dir: a directory opened by path (O_RDONLY|O_DIRECTORY, as opendir(3)
// does; also /proc/PID: see procfs.go), record image.File itself. Made
// again by opening the path with the flags. (Its getdents position is not
// kept: the offset is left at 0.)
type dir struct{}

func (dir) Type() string { return image.FileDir }

func (dir) Recognize(p *Probe) bool { return p.IsPath() && p.Mode() == unix.S_IFDIR }

func (dir) Dump(*Probe, *image.File) error { return nil }

func (dir) Validate(*image.Checkpoint, *image.File) error { return nil }

func (dir) Check(_ Env, f *image.File) error {
	_, err := checkOnDisk(f, false)
	return err
}

func (dir) Open(_ *Opener, f *image.File) (int, error) { return openPath(reopenPath(f), f.Flags) }
