package memdump_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/dump"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// refuseDump dumps the memrefuse fixture of kind, which cr must refuse:
// the error names the mapping as want says, nothing is left on disk, and
// the process keeps running with its memory intact.
func refuseDump(t *testing.T, kind string, want func(p *testutil.Proc) []string) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "memrefuse"), kind)
	p.Check(t)
	parent := t.TempDir()
	_, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: filepath.Join(parent, "img")})
	require.Error(t, err, "dump of %s memory", kind)
	t.Logf("refused: %v", err)
	var ue *dump.UnsupportedError
	require.True(t, errors.As(err, &ue), "an UnsupportedError, got %T", err)
	for _, w := range want(p) {
		require.Contains(t, err.Error(), w)
	}
	require.NotContains(t, err.Error(), "deleted file")
	ents, err := os.ReadDir(parent)
	require.NoError(t, err)
	require.Empty(t, ents, "a refused dump leaves nothing behind")
	require.True(t, p.Alive(), "the target is gone after a refused dump")
	p.Check(t)
	require.Equal(t, 0, p.Stop(t))
}

// TestRefuseMemfdSecret: memfd_secret memory is named as such, not as "the
// deleted file /secretmem". Issue 9, finding 6.
func TestRefuseMemfdSecret(t *testing.T) {
	fd, _, e := unix.Syscall(unix.SYS_MEMFD_SECRET, 0, 0, 0)
	if e == unix.ENOSYS {
		t.Skip("this kernel has no memfd_secret (CONFIG_SECRETMEM)")
	}
	if e == 0 {
		unix.Close(int(fd))
	}
	refuseDump(t, "secret", func(p *testutil.Proc) []string {
		return []string{
			fmt.Sprintf("vma %#x-", p.HexInfo(t, "addr")),
			"secret memory (memfd_secret(2))",
		}
	})
}
