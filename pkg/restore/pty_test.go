package restore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/dump"
	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/procfs"
	"github.com/cr-tools/cr/pkg/restore"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// ptsDev is the device number of /dev/pts/n.
func ptsDev(t *testing.T, n int) uint64 {
	var st unix.Stat_t
	require.NoError(t, unix.Stat(fmt.Sprintf("/dev/pts/%d", n), &st))
	return st.Rdev
}

// statTTY returns the controlling terminal (device number, 0: none) and its
// foreground group (/proc/PID/stat tty_nr and tpgid) of pid, and its state.
func statTTY(t *testing.T, pid int) (uint64, int, byte) {
	st, err := procfs.ReadStat(pid)
	require.NoError(t, err)
	n := uint64(uint32(st.TtyNr))
	return unix.Mkdev(uint32((n>>8)&0xfff), uint32((n&0xff)|((n>>12)&0xfff00))), st.Tpgid, st.State
}

// TestPtyPair: a parent holding a pty master (packet and exclusive mode,
// non-default termios and window size) and a child whose controlling
// terminal is the slave, with a foreground job in another process group and
// a background job stopped by SIGTTIN, come back with the same pty number,
// the termios and window size (checked from inside both, through the
// master and on the slave), the child's session on the terminal, /dev/tty,
// the foreground group, and the stopped job, which stops again by SIGTTIN
// when continued (it is still a background job of that terminal).
func TestPtyPair(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "ptypair"), "job")
	p.Check(t)
	pts, child, fg, bg := p.IntInfo(t, "pts"), p.IntInfo(t, "child"), p.IntInfo(t, "fg"), p.IntInfo(t, "bg")
	dev := ptsDev(t, pts)
	tty, tpgid, state := statTTY(t, bg)
	require.Equal(t, dev, tty)
	require.Equal(t, fg, tpgid)
	require.Equal(t, byte('T'), state, "bg is stopped before the dump")

	q, ck := dumpAndRestore(t, p)
	var master *image.File
	for i := range ck.Files {
		if f := &ck.Files[i]; f.Type == image.FilePty && f.Pty.Role == image.PtyMaster {
			master = f
		}
	}
	require.NotNil(t, master, "a pty master in the image")
	require.Equal(t, pts, master.Pty.Index)
	require.Equal(t, child, master.Pty.Sid)
	require.Equal(t, fg, master.Pty.Fg)
	require.True(t, master.Pty.Packet && master.Pty.MasterExcl)

	q.Check(t) // the parent through the master, the child on the slave
	for _, pid := range []int{child, fg, bg} {
		tty, tpgid, _ := statTTY(t, pid)
		require.Equal(t, dev, tty, "pid %d has the slave as controlling terminal", pid)
		require.Equal(t, fg, tpgid, "pid %d: the terminal's foreground group", pid)
	}
	_, _, state = statTTY(t, bg)
	require.Equal(t, byte('T'), state, "bg is still stopped")
	require.NoError(t, unix.Kill(bg, unix.SIGCONT))
	var st byte
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, _, st = statTTY(t, bg); st == 'T' {
			break
		}
	}
	require.Equal(t, byte('T'), st, "continued, bg reads its terminal and is stopped by SIGTTIN again")
	q.Check(t)
}

// TestPtyQueuedData: bytes queued in a pty in either direction cannot be
// read without consuming them, so the dump refuses, naming them, and leaves
// them where they were (the fixture then reads both and checks them); once
// they are read, the same tree dumps and restores.
func TestPtyQueuedData(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "ptypair"), "data")
	pts := p.IntInfo(t, "pts")
	refused(t, p, fmt.Sprintf("pty master of /dev/pts/%d, holding 8 bytes its slave side wrote", pts),
		fmt.Sprintf("pty slave /dev/pts/%d, holding 6 bytes written to its master", pts))
	q, ck := dumpAndRestore(t, p)
	q.Check(t)
	var paths []string
	for _, f := range ck.Files {
		if f.Type == image.FilePty {
			paths = append(paths, f.Pty.Role+" "+f.Ident.Path)
		}
	}
	require.Contains(t, paths, "master /dev/pts/ptmx", "the master was opened through the devpts mount")
	link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", q.Pid, q.IntInfo(t, "fd_master")))
	require.NoError(t, err)
	require.Equal(t, "/dev/pts/ptmx", link)
}

// TestPtyNumberTaken: a restore whose pty number is in use on this machine
// fails naming it, and leaves nothing running; once it is free again the
// image restores with that number.
func TestPtyNumberTaken(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "ptypair"), "lone")
	pts := p.IntInfo(t, "pts")
	dir := filepath.Join(t.TempDir(), "img")
	_, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: dir})
	require.NoError(t, err)
	p.Kill()
	reapTree(t, dir)
	// Take /dev/pts/N (devpts gives the lowest free number).
	var held []int
	defer func() {
		for _, fd := range held {
			unix.Close(fd)
		}
	}()
	for {
		fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
		require.NoError(t, err)
		n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
		require.NoError(t, err)
		held = append(held, fd)
		if int(n) >= pts {
			require.Equal(t, pts, int(n), "could not take /dev/pts/%d", pts)
			break
		}
	}
	_, err = restore.Run(context.Background(), restore.Options{Dir: dir})
	require.ErrorContains(t, err, fmt.Sprintf("the pty /dev/pts/%d is in use on this machine", pts))
	require.NoDirExists(t, fmt.Sprintf("/proc/%d", p.Pid), "a failed restore leaves nothing running")
	unix.Close(held[len(held)-1])
	held = held[:len(held)-1]
	res, err := restore.Run(context.Background(), restore.Options{Dir: dir})
	require.NoError(t, err)
	q := testutil.Adopt(t, res.Pid, p.Dir)
	q.Check(t)
	link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", q.Pid, p.IntInfo(t, "fd_master")))
	require.NoError(t, err)
	require.Equal(t, "/dev/ptmx", link)
}

// TestPtyOutside: a slave whose master is held outside the tree is refused
// naming it (and --shell-job is proposed, as for the caller's terminal); a
// master whose slave a process outside the tree holds is refused naming
// that process.
func TestPtyOutside(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.BuildC(t, "ptypair")
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(m)
	require.NoError(t, unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0))
	n, err := unix.IoctlGetUint32(m, unix.TIOCGPTN)
	require.NoError(t, err)
	p := testutil.Start(t, bin, "slave", fmt.Sprintf("/dev/pts/%d", n))
	refused(t, p, fmt.Sprintf("/dev/pts/%d, whose master no process of the dumped tree holds", n), "--shell-job")

	// The slave as controlling terminal too: --shell-job saves it, and
	// the refusal says so.
	c := testutil.Start(t, bin, "ctty", fmt.Sprintf("/dev/pts/%d", n))
	st, err := procfs.ReadStat(c.Pid)
	require.NoError(t, err)
	require.NotZero(t, st.TtyNr, "the fixture has a controlling terminal")
	refused(t, c, fmt.Sprintf("pid %d has a controlling terminal (device %d:%d) that is not a pty whose master the dumped tree holds: dump it with --shell-job", c.Pid, (st.TtyNr>>8)&0xfff, n))

	l := testutil.Start(t, bin, "lone")
	pts := l.IntInfo(t, "pts")
	s, err := unix.Open(fmt.Sprintf("/dev/pts/%d", pts), unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(s)
	refused(t, l, fmt.Sprintf("pty master of /dev/pts/%d, whose slave process %d", pts, os.Getpid()), "outside the dumped tree", "holds at fd "+strconv.Itoa(s))
}

// TestSignalfd: a signalfd (as `script` holds one) comes back with its
// signal mask and flags.
func TestSignalfd(t *testing.T) {
	p := fdCase(t, "signalfd")
	fd := p.IntInfo(t, "fd")
	q, _ := dumpAndRestore(t, p)
	link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", q.Pid, fd))
	require.NoError(t, err)
	require.Equal(t, "anon_inode:[signalfd]", link)
	info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", q.Pid, fd))
	require.NoError(t, err)
	require.Contains(t, string(info), "sigmask:\t0000000000000001\n", "SIGHUP only")
	require.Equal(t, uint32(unix.O_RDWR), fdFlags(t, q.Pid, fd)&^uint32(unix.O_LARGEFILE))
	q.Check(t)
}
