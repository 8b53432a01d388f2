package files

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// What inotify.go and fanotify.go share: their fdinfo lines and finding
// the file a mark is on from its file handle.

// notifyFields parses the "key:value" fields of one fdinfo line of an
// inotify watch or fanotify mark (fs/notify/fdinfo.c), after its prefix.
func notifyFields(line string) map[string]string {
	m := map[string]string{}
	for _, kv := range strings.Fields(line) {
		if k, v, ok := strings.Cut(kv, ":"); ok {
			m[k] = v
		}
	}
	return m
}

// hexField is the field k of m, in hex (fdinfo prints every number of a
// mark with %x).
func hexField(m map[string]string, k string) (uint64, error) {
	v, ok := m[k]
	if !ok {
		return 0, fmt.Errorf("no %s", k)
	}
	n, err := strconv.ParseUint(v, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("%s %q: %w", k, v, err)
	}
	return n, nil
}

// userDev turns a kernel dev_t as fdinfo prints it ("sdev:", MAJOR << 20 |
// MINOR, include/linux/kdev_t.h) into st_dev's encoding.
func userDev(kdev uint64) uint64 {
	return unix.Mkdev(uint32(kdev>>20), uint32(kdev&0xfffff))
}

// mountOf is a mount of pid (/proc/PID/mountinfo): its id, device, the
// root of the filesystem it shows, and where, as cr sees it
// (/proc/PID/root/MOUNTPOINT).
type mountOf struct {
	id    int
	dev   uint64
	root  string
	point string
}

// mounts reads /proc/PID/mountinfo.
func mounts(pid int) ([]mountOf, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mountOf
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		x := strings.Fields(s.Text())
		if len(x) < 5 {
			continue
		}
		id, _ := strconv.Atoi(x[0])
		var maj, min uint32
		fmt.Sscanf(x[2], "%d:%d", &maj, &min)
		out = append(out, mountOf{id: id, dev: unix.Mkdev(maj, min), root: unescapeMount(x[3]), point: unescapeMount(x[4])})
	}
	return out, s.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// markedFile is the file a notification mark is on.
type markedFile struct {
	path     string // as cr sees it
	dev, ino uint64
	deleted  bool // unlinked (the mark holds it)
}

// fileByHandle finds the file of a mark of pid's from its fdinfo fields
// (sdev, fhandle-type, f_handle): open_by_handle_at(2) (CAP_DAC_READ_SEARCH)
// on a mount of that device, then the descriptor's path.
func fileByHandle(pid int, m map[string]string) (markedFile, error) {
	var mf markedFile
	sdev, err := hexField(m, "sdev")
	if err != nil {
		return mf, err
	}
	typ, err := hexField(m, "fhandle-type")
	if err != nil {
		return mf, err
	}
	h, err := hex.DecodeString(m["f_handle"])
	if err != nil || len(h) == 0 {
		return mf, fmt.Errorf("its filesystem gives no file handle (f_handle %q)", m["f_handle"])
	}
	dev := userDev(sdev)
	mnts, err := mounts(pid)
	if err != nil {
		return mf, err
	}
	var last error = fmt.Errorf("no mount of device %d:%d in pid %d's mount table", unix.Major(dev), unix.Minor(dev), pid)
	for _, mt := range mnts {
		if mt.dev != dev {
			continue
		}
		mfd, err := unix.Open(fmt.Sprintf("/proc/%d/root%s", pid, mt.point), unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
		if err != nil {
			last = err
			continue
		}
		fd, err := unix.OpenByHandleAt(mfd, unix.NewFileHandle(int32(typ), h), unix.O_PATH|unix.O_CLOEXEC)
		unix.Close(mfd)
		if err != nil {
			last = fmt.Errorf("open_by_handle_at on %s: %w", mt.point, err)
			continue
		}
		defer unix.Close(fd)
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return mf, err
		}
		p, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
		if err != nil {
			return mf, err
		}
		mf = markedFile{path: strings.TrimSuffix(p, " (deleted)"), dev: st.Dev, ino: st.Ino, deleted: st.Nlink == 0 || strings.HasSuffix(p, " (deleted)")}
		return mf, nil
	}
	return mf, last
}
