package restore_test

import (
	"testing"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/restore"
	"github.com/stretchr/testify/require"
)

// TestRoundTripFdLimit: processes that use more than half their fd limit
// (soft = hard), up to an fd at limit-1 and a full table, restore with
// every fd in place and the limit as it was.
func TestRoundTripFdLimit(t *testing.T) {
	bin := testutil.BuildC(t, "manyfds")
	for name, args := range map[string][]string{
		"fds 0-507 of 1024":          {"1024", "508"},
		"full table of 1024":         {"1024", "1024"},
		"fds 0-9 and 63 of 64":       {"64", "10", "63"},
		"full table of 64, 63 dup 5": {"64", "63", "63=5"},
	} {
		t.Run(name, func(t *testing.T) {
			q, _ := roundTrip(t, bin, args...)
			require.Equal(t, 0, q.Stop(t))
		})
	}
}

// TestPlanFds: the transport takes the lowest free fd, else the highest
// shared fd, else one above the table; the slots needed follow.
func TestPlanFds(t *testing.T) {
	fds := func(ids ...int) []image.Fd { // ids[i] is the file of fd i; -1: no fd
		var out []image.Fd
		for i, id := range ids {
			if id >= 0 {
				out = append(out, image.Fd{Fd: i, FileID: id})
			}
		}
		return out
	}
	for _, c := range []struct {
		fds  []image.Fd
		want restore.FdPlan
	}{
		{nil, restore.FdPlan{Transport: 0, Last: -1, Slots: 1}},
		{fds(1, 2, 3), restore.FdPlan{Transport: 3, Last: -1, Slots: 4}},
		{fds(1, -1, 3, 4), restore.FdPlan{Transport: 1, Last: -1, Slots: 4}},
		{fds(1, 2, 1, 4, 2, 5), restore.FdPlan{Transport: 4, Last: 4, Slots: 6}},
	} {
		require.Equal(t, c.want, restore.PlanFds(c.fds), "%v", c.fds)
	}
}
