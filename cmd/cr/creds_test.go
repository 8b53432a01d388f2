package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// startAs starts the fixture bin as uid/gid id (no groups, no
// capabilities) in a world-writable work directory and waits for READY.
func startAs(t *testing.T, bin string, id uint32) *testutil.Proc {
	require.NoError(t, os.Chmod(filepath.Dir(bin), 0o755)) // the build cache
	dir := t.TempDir()
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		require.NoError(t, os.Chmod(d, 0o777))
	}
	logPath := filepath.Join(dir, "log")
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o666)
	require.NoError(t, err)
	defer logf.Close()
	require.NoError(t, os.Chmod(logPath, 0o666))
	null, err := os.Open(os.DevNull)
	require.NoError(t, err)
	defer null.Close()
	pid, err := syscall.ForkExec(bin, []string{bin, dir}, &syscall.ProcAttr{
		Dir: dir, Files: []uintptr{null.Fd(), logf.Fd(), logf.Fd()},
		Sys: &syscall.SysProcAttr{Setsid: true, Credential: &syscall.Credential{Uid: id, Gid: id, Groups: []uint32{}}},
	})
	require.NoError(t, err)
	for deadline := time.Now().Add(testutil.ReadyTimeout); ; time.Sleep(10 * time.Millisecond) {
		b, _ := os.ReadFile(logPath)
		if strings.Contains(string(b), "READY") {
			break
		}
		if time.Now().After(deadline) {
			unix.Kill(pid, unix.SIGKILL)
			testutil.Reap(pid, time.Second)
			t.Fatalf("pid %d never got ready: %s", pid, b)
		}
	}
	return testutil.Adopt(t, pid, dir)
}

// TestCLIRestoreNotRootAmbient: a user who is not root but has the
// capabilities a restore needs in its ambient set restores its own
// process; where a capability set cannot be restored, the message names
// that set, the image's value and cr's limit.
func TestCLIRestoreNotRootAmbient(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv (util-linux) is not installed")
	}
	const capSysBoot = 22
	bnd, err := unix.PrctlRetInt(unix.PR_CAPBSET_READ, capSysBoot, 0, 0, 0)
	require.NoError(t, err)
	if bnd != 1 {
		t.Skip("CAP_SYS_BOOT is not in the test's bounding set")
	}
	p := startAs(t, testutil.BuildC(t, "counter"), 65534)
	imgStatus := capStatus(t, p.Pid)
	dir := filepath.Join(p.Dir, "img")
	_, e, code := cr(t, "dump", "-t", strconv.Itoa(p.Pid), "-o", dir)
	require.Equal(t, 0, code, e)
	p.Kill()
	require.NoError(t, os.Chmod(dir, 0o755))
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range ents {
		require.NoError(t, os.Chmod(filepath.Join(dir, e.Name()), 0o644))
	}
	restoreAs := func(extra ...string) (string, error) {
		args := append([]string{"--reuid=65534", "--regid=65534", "--clear-groups",
			"--inh-caps=+sys_admin,+checkpoint_restore", "--ambient-caps=+sys_admin,+checkpoint_restore"}, extra...)
		out, err := exec.Command("setpriv", append(args, crBin, "restore", "-i", dir, "-d")...).CombinedOutput()
		return string(out), err
	}

	// cr's bounding set lacks CAP_SYS_BOOT, which the image's has.
	out, err := restoreAs("--bounding-set=-sys_boot")
	require.Error(t, err)
	oneLine(t, out)
	require.Contains(t, out, "bounding set "+"0x"+strings.TrimLeft(imgStatus["CapBnd"], "0"))
	require.Contains(t, out, "capabilities 0x400000")
	require.Contains(t, out, "cr's bounding set 0x"+strconv.FormatUint(imgBnd(t, imgStatus)&^(1<<capSysBoot), 16))
	require.NoDirExists(t, "/proc/"+strconv.Itoa(p.Pid))

	// With the full bounding set it restores, with the image's credentials.
	out, err = restoreAs()
	require.NoError(t, err, out)
	q := testutil.Adopt(t, p.Pid, p.Dir)
	require.Equal(t, imgStatus, capStatus(t, q.Pid))
	q.Check(t)
}

func imgBnd(t *testing.T, st map[string]string) uint64 {
	v, err := strconv.ParseUint(st["CapBnd"], 16, 64)
	require.NoError(t, err)
	return v
}

// capStatus returns the credential lines of /proc/PID/status.
func capStatus(t *testing.T, pid int) map[string]string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	require.NoError(t, err)
	m := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		switch k {
		case "Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs":
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}
