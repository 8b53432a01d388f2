package restore_test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/dump"
	"github.com/cr-tools/cr/pkg/restore"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// sqliteCheck opens the database from another process (python3's sqlite3)
// and returns "INTEGRITY ROWS".
func sqliteCheck(t *testing.T, db string) string {
	out, err := exec.Command("python3", "-c", `import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
print(c.execute("PRAGMA integrity_check").fetchone()[0], c.execute("SELECT count(*) FROM t").fetchone()[0])
c.close()`, db).CombinedOutput()
	require.NoError(t, err, "%s", out)
	return strings.TrimSpace(string(out))
}

// TestRoundTripSqliteWAL: a sqlite3 writer in WAL mode inserting in a loop
// (testdata/sqlitewal.py) keeps its -shm file mapped MAP_SHARED and holds a
// POSIX read lock on its byte 128 (sqlite's DMS lock) through its own fd.
// Dumped and restored with --file-locks, the lock is held again by the
// writer (F_GETLK from this process), so a reader opening and closing the
// database meanwhile does not take the -shm over from under it;
// integrity_check is ok from outside and inside, and the writer keeps
// writing.
func TestRoundTripSqliteWAL(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.PythonScript(t, "sqlitewal.py"))
	p.Check(t)
	db := filepath.Join(p.Dir, "db.sqlite")
	dms := func() unix.Flock_t { return getlk(t, db+"-shm", unix.F_GETLK, 128, 1) }
	fl := dms()
	require.Equal(t, []any{int16(unix.F_RDLCK), int32(p.Pid)}, []any{fl.Type, fl.Pid}, "the writer's lock on the -shm byte 128")

	dir := filepath.Join(t.TempDir(), "img")
	_, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: dir, FileLocks: true})
	require.NoError(t, err)
	p.Kill()
	res, err := restore.Run(context.Background(), restore.Options{Dir: dir, FileLocks: true})
	require.NoError(t, err)
	q := testutil.Adopt(t, res.Pid, p.Dir)
	q.Info = p.Info
	fl = dms()
	require.Equal(t, []any{int16(unix.F_RDLCK), int32(p.Pid)}, []any{fl.Type, fl.Pid}, "the restored writer's lock on the -shm byte 128")
	q.Check(t)
	got := sqliteCheck(t, db)
	require.True(t, strings.HasPrefix(got, "ok "), "integrity_check from another process: %s", got)
	fl = dms()
	require.Equal(t, []any{int16(unix.F_RDLCK), int32(p.Pid)}, []any{fl.Type, fl.Pid}, "the lock after another process used the database")
	c1 := q.Check(t)
	c2 := q.Check(t)
	require.Greater(t, c2, c1, "the writer keeps writing")
	require.Equal(t, 0, q.Stop(t))
	var rows uint64
	_, err = fmt.Sscanf(sqliteCheck(t, db), "ok %d", &rows)
	require.NoError(t, err)
	require.GreaterOrEqual(t, rows, c2, "every row the writer inserted is in")
}
