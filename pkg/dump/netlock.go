package dump

import (
	"errors"
	"fmt"

	"github.com/cr-tools/cr/pkg/netlock"
)

// The network lock of a dump (docs/DESIGN.md, "TCP sockets"): with
// --tcp-established, the tree's established TCP connections are locked
// (pkg/netlock: an nf_tables table that drops their packets both ways)
// right after the freeze, before any socket is read, so that their queues
// stand still while TCP repair reads them and no packet meets a missing
// socket later. Then:
//
//   - a committed dump that kills the tree: cr's copies of the sockets are
//     closed in repair mode (silently) and the lock stays, named in the
//     image (Inventory.NetLock) for restore to remove;
//   - a failed, refused or interrupted dump, and --leave-running: every
//     connection leaves repair mode, then the lock is removed, before the
//     processes are let go. No table is left behind.
//
// The pre-flight (CheckOnly) takes no lock and reads no socket in repair
// mode. --network-lock skip takes no lock either: the caller keeps the
// connections' packets away.

// Values of Options.NetworkLock.
const (
	NetworkLockNFTables = "nftables"
	NetworkLockSkip     = "skip"
)

// lockNetwork hands the dump's TCP options to the collector and, for a
// dump that saves established connections, locks every one the tree
// holds (one sock_diag read).
func (t *tree) lockNetwork() error {
	tcp := t.files.TCP
	tcp.Established, tcp.SkipInFlight, tcp.CheckOnly = t.opt.TCPEstablished, t.opt.SkipInFlight, t.opt.CheckOnly
	switch t.opt.NetworkLock {
	case "", NetworkLockNFTables, NetworkLockSkip:
	default:
		return fmt.Errorf("network lock %q: want %q or %q", t.opt.NetworkLock, NetworkLockNFTables, NetworkLockSkip)
	}
	if t.opt.CheckOnly || !t.opt.TCPEstablished || t.opt.NetworkLock == NetworkLockSkip {
		return nil
	}
	var pids []int
	for _, p := range t.procs {
		if !p.leaderless { // refused anyway
			pids = append(pids, p.pid)
		}
	}
	conns, err := tcp.Connections(pids)
	if err != nil {
		return fmt.Errorf("network lock: %w", err)
	}
	if len(conns) == 0 {
		return nil
	}
	name, err := netlock.NewName()
	if err != nil {
		return err
	}
	if err := netlock.Lock(name, conns); err != nil {
		return err
	}
	t.netLock = name
	t.logf("network lock %s: %d TCP connection(s)", name, len(conns))
	return t.notify(ActionNetworkLock)
}

// imageLock is the lock the image names: the one taken, unless the tree
// is left running (its connections go on; the lock goes at the end).
func (t *tree) imageLock() string {
	if t.opt.LeaveRunning {
		return ""
	}
	return t.netLock
}

// finishNetwork runs before the processes are let go (killed or
// resumed). A dump that kills the tree releases the sockets and keeps the
// lock; any other end resumes the connections and removes the lock. A
// failure to resume or unlock is the dump's error if it had none.
func (t *tree) finishNetwork(err error, committed bool) error {
	tcp := t.files.TCP
	if tcp == nil {
		return err
	}
	if err == nil && committed && !t.opt.LeaveRunning {
		// The image is in place: what is left cannot fail the dump.
		if rerr := tcp.Release(); rerr != nil {
			t.logf("release TCP sockets: %v", rerr)
		}
		if t.netLock != "" {
			t.logf("network lock %s stays until the restore (cr network-unlock -i %s removes it)", t.netLock, t.opt.Dir)
		}
		return nil
	}
	var errs []error
	if rerr := tcp.Resume(); rerr != nil {
		errs = append(errs, rerr)
	}
	if t.netLock != "" {
		if uerr := netlock.Unlock(t.netLock); uerr != nil {
			errs = append(errs, uerr)
		} else {
			t.logf("network lock %s removed", t.netLock)
		}
	}
	if len(errs) == 0 {
		return err
	}
	if err == nil {
		return errors.Join(errs...)
	}
	for _, e := range errs {
		t.logf("%v", e)
	}
	return err
}
