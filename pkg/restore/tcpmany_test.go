package restore_test

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/dump"
	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/restore"
	"github.com/stretchr/testify/require"
)

// TestTCPManySharedConnections: 200 established connections, each held by
// two fds of the server (dup), make a table large enough for the dump to
// read the fds on every CPU at once, so that both fds of one socket are
// often read at the same time. Each socket is read once (one record per
// connection, both fds sharing it), the image loads, and after the restore
// both fds of every connection are one socket again and every connection
// echoes.
func TestTCPManySharedConnections(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "tcp"), "serve", "4", "dup")
	const n = 200
	conns := make([]net.Conn, n)
	for i := range conns {
		conns[i] = dial(t, "tcp", "127.0.0.1:"+p.Info["port"])
	}
	ping := func() {
		t.Helper()
		for i, c := range conns {
			echo(t, c, fmt.Sprintf("c%03d", i))
		}
	}
	ping() // every connection accepted (and dup'd)
	dir, lock := dumpKill(t, p, dump.Options{})
	require.NotEmpty(t, lock)
	ck, err := image.Load(dir)
	require.NoError(t, err)
	inet := 0
	for _, f := range ck.Files {
		if f.Inet != nil && f.Inet.State == image.TCPEstablished {
			inet++
		}
	}
	require.Equal(t, n, inet, "one record per connection")
	require.Len(t, ck.Processes[0].Fds, 3+1+2*n, "stdio, the listener, two fds per connection")
	q := restoreTCP(t, p, dir, lock, restore.Options{})
	fds := map[string]int{} // socket link -> fds holding it
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", q.Pid))
	require.NoError(t, err)
	for _, e := range ents {
		if fd, _ := strconv.Atoi(e.Name()); fd < 3 {
			continue
		}
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", q.Pid, e.Name()))
		require.NoError(t, err)
		if strings.HasPrefix(link, "socket:") {
			fds[link]++
		}
	}
	twice := 0
	for _, k := range fds {
		if k == 2 {
			twice++
		}
	}
	require.Len(t, fds, 1+n, "the listener and one socket per connection")
	require.Equal(t, n, twice, "each connection's socket held by its two fds")
	ping()
	q.Check(t)
}
