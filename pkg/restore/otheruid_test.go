package restore_test

import (
	"fmt"
	"os"
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
	_, err := dump.Run(dump.Options{Pid: p.Pid, Dir: dir})
	require.NoError(t, err)
	p.Kill()
	reapTree(t, dir)

	res, err := restore.Run(restore.Options{Dir: dir})
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
