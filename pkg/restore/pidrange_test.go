package restore_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/dump"
	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/restore"
	"github.com/stretchr/testify/require"
)

// TestRestoreRefusesPidOutOfRange: an image pid or tid that clone3 cannot
// give (0, negative, pid_max and above) is refused before anything is
// created, with a message naming the pid and pid_max.
func TestRestoreRefusesPidOutOfRange(t *testing.T) {
	testutil.RequireRoot(t)
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	require.NoError(t, err)
	pidMax, err := strconv.Atoi(strings.TrimSpace(string(b)))
	require.NoError(t, err)
	p := testutil.Start(t, testutil.BuildC(t, "counter"))
	src := filepath.Join(t.TempDir(), "img")
	_, err = dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: src})
	require.NoError(t, err)
	p.Kill()
	setPid := func(pid int) func(c *image.Checkpoint) {
		return func(c *image.Checkpoint) {
			tk := &c.Processes[0].Task
			tk.Pid, tk.Sid, tk.Pgid = pid, pid, pid
			c.Processes[0].Threads[0].Tid = pid
			c.Inventory.RootPid, c.Inventory.Pids = pid, []int{pid}
		}
	}
	for _, pid := range []int{0, -7, pidMax, pidMax + 1000} {
		t.Run(strconv.Itoa(pid), func(t *testing.T) {
			dir := rewrite(t, src, setPid(pid))
			_, err := restore.Run(context.Background(), restore.Options{Dir: dir})
			require.Error(t, err)
			require.Contains(t, err.Error(), "pid "+strconv.Itoa(pid)+" is outside")
			require.Contains(t, err.Error(), "pid_max is "+strconv.Itoa(pidMax))
		})
	}
	t.Run("thread", func(t *testing.T) {
		dir := rewrite(t, src, func(c *image.Checkpoint) {
			th := c.Processes[0].Threads[0]
			th.Tid = pidMax + 1
			c.Processes[0].Threads = append(c.Processes[0].Threads, th)
		})
		_, err := restore.Run(context.Background(), restore.Options{Dir: dir})
		require.Error(t, err)
		require.Contains(t, err.Error(), "thread "+strconv.Itoa(pidMax+1)+" of the image's pid "+strconv.Itoa(p.Pid)+" is outside")
		require.NoDirExists(t, "/proc/"+strconv.Itoa(p.Pid), "nothing was created")
	})
}
