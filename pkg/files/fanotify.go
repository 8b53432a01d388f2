package files

import (
	"fmt"
	"strings"

	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// fanotify: a fanotify(7) group ("anon_inode:[fanotify]"), record
// image.Fanotify. Dumped from its fdinfo (fs/notify/fdinfo.c
// fanotify_show_fdinfo): "fanotify flags:%x event-flags:%x" (the
// fanotify_init(2) flags and event_f_flags), then one line per mark: on an
// inode ("fanotify ino:%lx sdev:%x mflags:%x mask:%x ignored_mask:%x
// fhandle-...", the file found from its handle as for inotify), a mount
// ("fanotify mnt_id:%x ...": its mount point in the process's mount table)
// or a filesystem ("fanotify sdev:%x ...": a mount of it). Made again with
// fanotify_init(2) and fanotify_mark(2) per mark (the ignore mask with
// FAN_MARK_IGNORED_MASK, or FAN_MARK_IGNORE when the mark was made so).
//
// Refused: a group of a permission class (FAN_CLASS_CONTENT,
// FAN_CLASS_PRE_CONTENT), whose events read but not yet answered hold
// other processes inside the kernel and cannot be seen; a mark of another
// kind (a mount namespace's). Queued events are not saved, as for inotify.
type fanotify struct{}

// fanotify_init(2) and fanotify_mark(2) flags (include/uapi/linux/fanotify.h).
const (
	fanClassMask             = 0x0000000c // FAN_CLASS_CONTENT | FAN_CLASS_PRE_CONTENT
	fanMarkIgnoredSurvModify = 0x00000040
	fanMarkEvictable         = 0x00000200
	fanMarkIgnore            = 0x00000400
)

func (fanotify) Type() string { return image.FileFanotify }

func (fanotify) Recognize(p *Probe) bool { return p.Target == "anon_inode:[fanotify]" }

func (fanotify) Dump(p *Probe, f *image.File) error {
	fa := &image.Fanotify{}
	for _, line := range strings.Split(p.Info, "\n") {
		rest, ok := strings.CutPrefix(line, "fanotify ")
		if !ok {
			continue
		}
		m := notifyFields(rest)
		if _, ok := m["event-flags"]; ok {
			fl, err1 := hexField(m, "flags")
			ef, err2 := hexField(m, "event-flags")
			if err1 != nil || err2 != nil {
				return fmt.Errorf("fd %d: fanotify line %q", p.Fd, line)
			}
			fa.Flags, fa.EventFlags = uint32(fl), uint32(ef)
			continue
		}
		var mk image.FanotifyMark
		var err error
		if mk.Mask, err = hexField(m, "mask"); err != nil {
			return fmt.Errorf("fd %d: fanotify mark %q: %w", p.Fd, line, err)
		}
		mk.IgnoredMask, _ = hexField(m, "ignored_mask")
		mf, _ := hexField(m, "mflags")
		mk.MFlags = uint32(mf)
		switch {
		case m["ino"] != "":
			mk.Kind = "inode"
			file, err := fileByHandle(p.Pid, m)
			if err != nil {
				return &UnsupportedError{Fd: p.Fd, What: fmt.Sprintf("a fanotify group with a mark on inode 0x%s, which cr cannot find (%v)", m["ino"], err)}
			}
			if file.deleted {
				return &UnsupportedError{Fd: p.Fd, What: "a fanotify group with a mark on the deleted file " + file.path}
			}
			mk.Path, mk.Dev, mk.Ino = file.path, file.dev, file.ino
		case m["mnt_id"] != "":
			mk.Kind = "mount"
			id, _ := hexField(m, "mnt_id")
			if mk.Path, err = mountPath(p.Pid, func(mt mountOf) bool { return mt.id == int(id) }); err != nil {
				return &UnsupportedError{Fd: p.Fd, What: fmt.Sprintf("a fanotify group with a mark on mount %d, which cr cannot find (%v)", id, err)}
			}
		case m["sdev"] != "":
			mk.Kind = "filesystem"
			sdev, _ := hexField(m, "sdev")
			mk.Dev = userDev(sdev)
			if mk.Path, err = mountPath(p.Pid, func(mt mountOf) bool { return mt.dev == mk.Dev && mt.root == "/" }); err != nil {
				return &UnsupportedError{Fd: p.Fd, What: fmt.Sprintf("a fanotify group with a mark on the filesystem of device %d:%d, which cr cannot find (%v)", unix.Major(mk.Dev), unix.Minor(mk.Dev), err)}
			}
		default:
			return &UnsupportedError{Fd: p.Fd, What: fmt.Sprintf("a fanotify group with a mark of an unknown kind (%s)", rest)}
		}
		fa.Marks = append(fa.Marks, mk)
	}
	if fa.Flags&fanClassMask != 0 {
		return &UnsupportedError{Fd: p.Fd, What: "a fanotify group of a permission class (FAN_CLASS_CONTENT or FAN_CLASS_PRE_CONTENT), whose unanswered permission events cr cannot see"}
	}
	f.Fanotify = fa
	return nil
}

// mountPath is the mount point, as cr sees it, of the first mount of pid
// that match accepts.
func mountPath(pid int, match func(mountOf) bool) (string, error) {
	mnts, err := mounts(pid)
	if err != nil {
		return "", err
	}
	for _, mt := range mnts {
		if match(mt) {
			return mt.point, nil
		}
	}
	return "", fmt.Errorf("not in pid %d's mount table", pid)
}

func (fanotify) Validate(_ *image.Checkpoint, f *image.File) error {
	if err := need(f.Fanotify != nil, f, "group"); err != nil {
		return err
	}
	for _, m := range f.Fanotify.Marks {
		switch m.Kind {
		case "inode", "mount", "filesystem":
		default:
			return fmt.Errorf("fanotify mark of unknown kind %q", m.Kind)
		}
		if m.Path == "" || m.Path[0] != '/' {
			return fmt.Errorf("fanotify mark on %q: not an absolute path", m.Path)
		}
	}
	return nil
}

func (fanotify) Check(_ Env, f *image.File) error {
	for _, m := range f.Fanotify.Marks {
		if err := unix.Lstat(m.Path, new(unix.Stat_t)); err != nil {
			return fmt.Errorf("fanotify mark on %s: %w", m.Path, err)
		}
	}
	return nil
}

func (fanotify) Open(_ *Opener, f *image.File) (int, error) {
	fa := f.Fanotify
	flags := uint(fa.Flags)&^(unix.FAN_NONBLOCK) | unix.FAN_CLOEXEC
	if f.Flags&unix.O_NONBLOCK != 0 {
		flags |= unix.FAN_NONBLOCK
	}
	fd, err := unix.FanotifyInit(flags, uint(fa.EventFlags))
	if err != nil {
		return 0, fmt.Errorf("fanotify_init flags %#x event_f_flags %#x: %w", flags, fa.EventFlags, err)
	}
	for _, m := range fa.Marks {
		base := uint(unix.FAN_MARK_ADD | unix.FAN_MARK_DONT_FOLLOW)
		switch m.Kind {
		case "mount":
			base |= unix.FAN_MARK_MOUNT
		case "filesystem":
			base |= unix.FAN_MARK_FILESYSTEM
		default:
			base |= uint(m.MFlags & fanMarkEvictable)
		}
		if m.Mask != 0 {
			if err := unix.FanotifyMark(fd, base, m.Mask, unix.AT_FDCWD, m.Path); err != nil {
				unix.Close(fd)
				return 0, fmt.Errorf("fanotify %s mark on %s, mask %#x: %w", m.Kind, m.Path, m.Mask, err)
			}
		}
		if m.IgnoredMask != 0 {
			ign := base | uint(m.MFlags&fanMarkIgnoredSurvModify)
			if m.MFlags&fanMarkIgnore != 0 {
				ign |= fanMarkIgnore
			} else {
				ign |= unix.FAN_MARK_IGNORED_MASK
			}
			if err := unix.FanotifyMark(fd, ign, m.IgnoredMask, unix.AT_FDCWD, m.Path); err != nil {
				unix.Close(fd)
				return 0, fmt.Errorf("fanotify %s mark on %s, ignore mask %#x: %w", m.Kind, m.Path, m.IgnoredMask, err)
			}
		}
	}
	return fd, nil
}

func (fanotify) Describe(f *image.File) string {
	if f.Fanotify == nil {
		return "fanotify"
	}
	var ms []string
	for _, m := range f.Fanotify.Marks {
		ms = append(ms, fmt.Sprintf("%s %s mask %#x", m.Kind, m.Path, m.Mask))
	}
	s := fmt.Sprintf("fanotify group flags %#x, %d mark(s)", f.Fanotify.Flags, len(ms))
	if len(ms) > 0 {
		s += ": " + strings.Join(ms, ", ")
	}
	return s + "; queued events are not saved"
}
