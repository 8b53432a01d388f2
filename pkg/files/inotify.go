package files

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// inotify: an inotify(7) instance ("anon_inode:inotify"), record
// image.Inotify. Dumped from its fdinfo, one line per watch ("inotify
// wd:%x ino:%lx sdev:%x mask:%x ignored_mask:0 fhandle-bytes:%x
// fhandle-type:%x f_handle:%s", fs/notify/fdinfo.c): the watched file is
// found from its file handle (notify.go), and a watch on a file deleted
// since is refused, naming it. Made again with inotify_init1(2) and one
// inotify_add_watch(2) per watch, in watch descriptor order. The kernel
// hands out watch descriptors cyclically, each one above the last
// (idr_alloc_cyclic in fs/notify/inotify/inotify_user.c), so a watch
// gets its number N by adding it and removing it again until the number
// given is N (CRIU's restore_one_inotify does the same); the IN_IGNORED
// events those removals queue are read off before the task gets the
// instance.
//
// Events queued at the dump are not saved: reading them would take them
// from the program. The image records how many bytes were queued
// (FIONREAD on a copy of the descriptor), `cr show` and `cr dump -v` say
// so. Events that happen while the process is checkpointed are lost too
// (a program like tail -f sees the file's new contents at its next event).
type inotify struct{}

func (inotify) Type() string { return image.FileInotify }

func (inotify) Recognize(p *Probe) bool { return p.Target == "anon_inode:inotify" }

func (inotify) Dump(p *Probe, f *image.File) error {
	in := &image.Inotify{}
	for _, line := range strings.Split(p.Info, "\n") {
		rest, ok := strings.CutPrefix(line, "inotify ")
		if !ok {
			continue
		}
		m := notifyFields(rest)
		wd, err := hexField(m, "wd")
		if err != nil {
			return fmt.Errorf("fd %d: inotify watch %q: %w", p.Fd, line, err)
		}
		mask, err := hexField(m, "mask")
		if err != nil {
			return fmt.Errorf("fd %d: inotify watch %d: %w", p.Fd, wd, err)
		}
		mf, err := fileByHandle(p.Pid, m)
		if err != nil {
			ino, _ := hexField(m, "ino")
			return &UnsupportedError{Fd: p.Fd, What: fmt.Sprintf("an inotify instance whose watch %d is on inode %d, which cr cannot find (%v)", wd, ino, err)}
		}
		if mf.deleted {
			return &UnsupportedError{Fd: p.Fd, What: fmt.Sprintf("an inotify instance whose watch %d is on the deleted file %s", wd, mf.path)}
		}
		in.Watches = append(in.Watches, image.InotifyWatch{Wd: int(wd), Path: mf.path, Dev: mf.dev, Ino: mf.ino, Mask: uint32(mask)})
	}
	sort.Slice(in.Watches, func(i, j int) bool { return in.Watches[i].Wd < in.Watches[j].Wd })
	if fd, err := CopyFd(p.Pid, p.Fd); err == nil {
		in.QueuedBytes, _ = unix.IoctlGetInt(fd, fionread)
		unix.Close(fd)
	}
	f.Inotify = in
	return nil
}

func (inotify) Validate(_ *image.Checkpoint, f *image.File) error {
	if err := need(f.Inotify != nil, f, "watches"); err != nil {
		return err
	}
	prev := 0
	for _, w := range f.Inotify.Watches {
		if w.Wd <= prev {
			return fmt.Errorf("inotify watch descriptor %d out of order or not positive", w.Wd)
		}
		if w.Path == "" || w.Path[0] != '/' {
			return fmt.Errorf("inotify watch %d on %q: not an absolute path", w.Wd, w.Path)
		}
		prev = w.Wd
	}
	return nil
}

// Check: every watched path is there; one that is another file now is
// watched as it is (-v notes it).
func (inotify) Check(env Env, f *image.File) error {
	for _, w := range f.Inotify.Watches {
		var st unix.Stat_t
		if err := unix.Lstat(w.Path, &st); err != nil {
			return fmt.Errorf("inotify watch %d on %s: %w", w.Wd, w.Path, err)
		}
		if st.Ino != w.Ino || st.Dev != w.Dev {
			env.Logf("note: %s, watched by inotify (watch %d), is another file since the dump; the new one is watched", w.Path, w.Wd)
		}
	}
	return nil
}

// inDontFollow is IN_DONT_FOLLOW (include/uapi/linux/inotify.h).
const inDontFollow = 0x02000000

func (inotify) Open(_ *Opener, f *image.File) (int, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return 0, fmt.Errorf("inotify_init1: %w", err)
	}
	removed := false
	for _, w := range f.Inotify.Watches {
		mask := w.Mask
		if fi, err := os.Lstat(w.Path); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			mask |= inDontFollow
		}
		for {
			wd, err := unix.InotifyAddWatch(fd, w.Path, mask)
			if err != nil {
				unix.Close(fd)
				return 0, fmt.Errorf("inotify watch %d on %s: %w", w.Wd, w.Path, err)
			}
			if wd == w.Wd {
				break
			}
			if wd > w.Wd {
				unix.Close(fd)
				return 0, fmt.Errorf("inotify watch %d on %s: the kernel gave watch descriptor %d (two watches of the image on one file?)", w.Wd, w.Path, wd)
			}
			if _, err := unix.InotifyRmWatch(fd, uint32(wd)); err != nil {
				unix.Close(fd)
				return 0, fmt.Errorf("inotify watch %d on %s: remove the filler %d: %w", w.Wd, w.Path, wd, err)
			}
			removed = true
		}
	}
	if removed {
		// Read off the IN_IGNORED events of the fillers.
		buf := make([]byte, 64<<10)
		for {
			if _, err := unix.Read(fd, buf); err != nil {
				if !errors.Is(err, unix.EAGAIN) {
					unix.Close(fd)
					return 0, fmt.Errorf("inotify: read the fillers' events: %w", err)
				}
				break
			}
		}
	}
	if err := SetFlags(fd, f.Flags); err != nil {
		unix.Close(fd)
		return 0, err
	}
	return fd, nil
}

func (inotify) Describe(f *image.File) string {
	if f.Inotify == nil {
		return "inotify"
	}
	var ws []string
	for _, w := range f.Inotify.Watches {
		ws = append(ws, fmt.Sprintf("%d %s", w.Wd, w.Path))
	}
	s := fmt.Sprintf("inotify, %d watch(es)", len(ws))
	if len(ws) > 0 {
		s += ": " + strings.Join(ws, ", ")
	}
	if f.Inotify.QueuedBytes > 0 {
		s += fmt.Sprintf("; %d bytes of events queued at the dump were not saved", f.Inotify.QueuedBytes)
	} else {
		s += "; queued events are not saved"
	}
	return s
}

// LogUnsaved reports (-v) what a collection leaves out of the image on
// purpose: the events queued on inotify instances.
func LogUnsaved(c *Collector, logf func(string, ...any)) {
	for _, f := range c.Files {
		if f.Inotify != nil && f.Inotify.QueuedBytes > 0 {
			pid, fd := c.Owner(f.ID)
			logf("pid %d fd %d: %d bytes of inotify events queued are left unsaved (reading them would take them from the process)", pid, fd, f.Inotify.QueuedBytes)
		}
	}
}
