package restore_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/dump"
	"github.com/cr-tools/cr/pkg/restore"
	"github.com/stretchr/testify/require"
)

// idView is what the kernel shows of a process's identity and limits:
// the credential lines of /proc/PID/status, /proc/PID/limits, and the owner
// of /proc/PID/status (the process's uid when it is dumpable, root when not).
func idView(t *testing.T, pid int) map[string]string {
	t.Helper()
	v := map[string]string{}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	for _, line := range strings.Split(string(st), "\n") {
		k, val, _ := strings.Cut(line, ":")
		switch k {
		case "PPid", "Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp":
			v[k] = strings.TrimSpace(val)
		}
	}
	lim, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	require.NoError(t, err)
	v["limits"] = string(lim)
	var fi syscall.Stat_t
	require.NoError(t, syscall.Stat(fmt.Sprintf("/proc/%d/status", pid), &fi))
	v["owner"] = fmt.Sprintf("%d:%d", fi.Uid, fi.Gid)
	return v
}

// TestRoundTripOtherUid: a parent and a child that dropped root for uid and
// gid 65534 after lowering their resource limits (soft and hard), with
// supplementary groups, no capabilities, a dumpable parent and a
// non-dumpable child, and a file in a directory only that uid may write.
// cr runs as root without CAP_SYS_RESOURCE: after the restore both have
// their pids, credentials and limits, and go on writing their files.
func TestRoundTripOtherUid(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "otheruid"))
	child := p.IntInfo(t, "child")
	p.Check(t)
	before := map[int]map[string]string{p.Pid: idView(t, p.Pid), child: idView(t, child)}
	require.Equal(t, "65534	65534	65534	65534", before[p.Pid]["Uid"])
	require.Equal(t, "65534:65534", before[p.Pid]["owner"], "the dumpable parent's /proc files belong to it")
	require.Equal(t, "0:0", before[child]["owner"], "the non-dumpable child's /proc files belong to root")
	o1 := look(t, p.Pid)

	dir := filepath.Join(t.TempDir(), "img")
	_, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: dir})
	require.NoError(t, err)
	p.Kill()
	reapTree(t, dir)

	res, err := restore.Run(context.Background(), restore.Options{Dir: dir})
	require.NoError(t, err)
	require.Equal(t, p.Pid, res.Pid)
	q := testutil.Adopt(t, res.Pid, p.Dir)
	q.Info = p.Info
	for pid, want := range before {
		require.Equal(t, want, idView(t, pid), "pid %d", pid)
	}
	o2 := look(t, q.Pid)
	require.Equal(t, o1.status, o2.status)
	require.Equal(t, o1.fds, o2.fds)
	for i := 0; i < 3; i++ {
		q.Check(t)
	}
	data, err := os.ReadFile(filepath.Join(p.Dir, "home", "data"))
	require.NoError(t, err)
	require.Equal(t, 4*len("fd\nopen\n"), len(data), "four checks appended to data, one before the dump")
	var fi syscall.Stat_t
	require.NoError(t, syscall.Stat(filepath.Join(p.Dir, "home", "new-4"), &fi))
	require.Equal(t, uint32(65534), fi.Uid, "the file created after the restore belongs to nobody")
	require.Equal(t, 0, q.Stop(t))
}

// TestRoundTripOtherUidPython: Debian's python3 with a second thread,
// started the way a service drops root: prlimit lowers its limits, setpriv
// sets uid and gid 65534, groups and securebits and execs it. Its cwd is a
// directory only uid 65534 may write, where both threads count in files.
func TestRoundTripOtherUidPython(t *testing.T) {
	testutil.RequireRoot(t)
	var bins []string
	for _, name := range []string{"prlimit", "setpriv", "/usr/bin/python3"} {
		bin, err := exec.LookPath(name)
		if err != nil {
			t.Skipf("%s not found", name)
		}
		bins = append(bins, bin)
	}
	home := filepath.Join(t.TempDir(), "home")
	require.NoError(t, os.Mkdir(home, 0o700))
	require.NoError(t, os.Chown(home, 65534, 65534))
	script := `
import threading, time
def count(name, pause):
    i = 0
    while True:
        i += 1
        with open(name, "a") as f:
            f.write(f"{i}\n")
        time.sleep(pause)
threading.Thread(target=count, args=("t", 0.01), daemon=True).start()
count("f", 0.02)
`
	null, err := os.Open(os.DevNull)
	require.NoError(t, err)
	defer null.Close()
	argv := []string{"prlimit", "--nofile=256:512", "--core=0:0", "--stack=4194304:16777216", "--nproc=3000:4000", "--",
		bins[1], "--reuid=65534", "--regid=65534", "--groups=100,4242", "--securebits=+noroot,+noroot_locked,+keep_caps_locked", "--",
		bins[2], "-c", script}
	pid, err := syscall.ForkExec(bins[0], argv, &syscall.ProcAttr{
		Dir: home, Env: []string{"PATH=/usr/bin:/bin"}, Files: []uintptr{null.Fd(), null.Fd(), null.Fd()},
		Sys: &syscall.SysProcAttr{Setsid: true},
	})
	require.NoError(t, err)
	p := testutil.Adopt(t, pid, home)
	waitNumbers(t, filepath.Join(home, "f"), 3)
	nt := waitNumbers(t, filepath.Join(home, "t"), 3)
	before := idView(t, pid)
	require.Equal(t, "65534	65534	65534	65534", before["Uid"])
	require.Contains(t, before["limits"], "Max open files            256                  512")

	img := filepath.Join(t.TempDir(), "img")
	_, err = dump.Run(context.Background(), dump.Options{Pid: pid, Dir: img})
	require.NoError(t, err)
	p.Kill()
	res, err := restore.Run(context.Background(), restore.Options{Dir: img})
	require.NoError(t, err)
	require.Equal(t, pid, res.Pid)
	q := testutil.Adopt(t, pid, home)
	require.Equal(t, before, idView(t, pid))
	waitNumbers(t, filepath.Join(home, "t"), nt+10)
	n := waitNumbers(t, filepath.Join(home, "f"), 3)
	waitNumbers(t, filepath.Join(home, "f"), n+5)
	require.True(t, q.Alive())
}
