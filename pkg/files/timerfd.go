package files

import (
	"fmt"
	"strconv"
	"strings"
	"unsafe"

	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// timerfd: a timerfd_create(2) timer ("anon_inode:[timerfd]"), record
// image.Timerfd. Dumped from its fdinfo (fs/timerfd.c timerfd_show: clockid,
// ticks, settime flags, it_value, it_interval); made again with
// timerfd_create, timerfd_settime (relative: the time left at the dump is
// the time left now) and TFD_IOC_SET_TICKS for expirations not yet read.
type timerfd struct{}

// tfdIocSetTicks is TFD_IOC_SET_TICKS, _IOW('T', 0, u64).
const tfdIocSetTicks = 0x40085400

func (timerfd) Type() string { return image.FileTimerfd }

func (timerfd) Recognize(p *Probe) bool { return p.Target == "anon_inode:[timerfd]" }

func (timerfd) Dump(p *Probe, f *image.File) error {
	// clockid, ticks, settime flags (octal), it_value: (sec, nsec), it_interval: (sec, nsec)
	tf := &image.Timerfd{}
	for _, line := range strings.Split(p.Info, "\n") {
		k, v, _ := strings.Cut(line, ":")
		v = strings.TrimSpace(v)
		switch k {
		case "clockid":
			tf.Clock, _ = strconv.Atoi(v)
		case "ticks":
			tf.Ticks, _ = strconv.ParseUint(v, 10, 64)
		case "settime flags":
			f, _ := strconv.ParseInt(v, 8, 32)
			tf.SetFlags = int(f)
		case "it_value", "it_interval":
			var sec, nsec int64
			fmt.Sscanf(v, "(%d, %d)", &sec, &nsec)
			if k == "it_value" {
				tf.ValueNs = sec*1e9 + nsec
			} else {
				tf.IntervalNs = sec*1e9 + nsec
			}
		}
	}
	f.Timerfd = tf
	return nil
}

func (timerfd) Validate(_ *image.Checkpoint, f *image.File) error {
	if err := need(f.Timerfd != nil, f, "timerfd record"); err != nil {
		return err
	}
	if tf := f.Timerfd; tf.ValueNs < 0 || tf.IntervalNs < 0 {
		return fmt.Errorf("timerfd with a negative time (value %d ns, interval %d ns)", tf.ValueNs, tf.IntervalNs)
	}
	return nil
}

func (timerfd) Open(_ *Opener, f *image.File) (int, error) {
	tf := f.Timerfd
	fd, err := unix.TimerfdCreate(tf.Clock, unix.TFD_CLOEXEC)
	if err != nil {
		return 0, fmt.Errorf("timerfd_create: %w", err)
	}
	value := tf.ValueNs
	if value == 0 && tf.IntervalNs != 0 {
		value = tf.IntervalNs // expired while frozen: re-armed on read; start the next period
	}
	// Relative: the time left at the dump is the time left now.
	its := unix.ItimerSpec{Interval: unix.NsecToTimespec(tf.IntervalNs), Value: unix.NsecToTimespec(value)}
	if err = unix.TimerfdSettime(fd, 0, &its, nil); err == nil && tf.Ticks > 0 {
		ticks := tf.Ticks
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), tfdIocSetTicks, uintptr(unsafe.Pointer(&ticks))); e != 0 {
			err = fmt.Errorf("timerfd ticks (TFD_IOC_SET_TICKS): %w", e)
		}
	}
	if err == nil {
		err = SetFlags(fd, f.Flags)
	}
	if err != nil {
		unix.Close(fd)
		return 0, err
	}
	return fd, nil
}
