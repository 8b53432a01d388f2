package restore

import (
	"fmt"
	"time"

	"github.com/cr-tools/cr/pkg/image"
)

// Actions passed to Options.Notify, named as CRIU names its action-script
// points (criu/action-scripts.c). ActionNetworkUnlock is called once
// restore has lifted the image's network lock (every socket rebuilt, just
// before the processes run); only for an image that has one.
const (
	ActionPreRestore    = "pre-restore"
	ActionPostRestore   = "post-restore"
	ActionNetworkUnlock = "network-unlock"
)

// notify calls opt.Notify for action with the root pid of the image in dir
// (read from its inventory; 0 if that cannot be read, for pre-restore
// which runs before the image is checked).
func notify(opt Options, action string, dir string) error {
	if opt.Notify == nil {
		return nil
	}
	pid := 0
	if inv, err := image.ReadInventory(dir); err == nil {
		pid = inv.RootPid
	}
	if err := opt.Notify(action, pid); err != nil {
		return fmt.Errorf("%s: %w", action, err)
	}
	return nil
}

func (t *treeRestore) notify(action string) error {
	if t.opt.Notify == nil {
		return nil
	}
	if err := t.opt.Notify(action, t.ck.Inventory.RootPid); err != nil {
		return fmt.Errorf("%s: %w", action, err)
	}
	return nil
}

// writeStats completes res with the page count and the image's size and
// writes them into the image directory as stats-restore.json
// (image.RestoreStats). The file is not part of the image: a failure to
// write it (a read-only image directory) is only logged.
func (t *treeRestore) writeStats(res *Result) {
	for _, p := range t.ck.Processes {
		for _, r := range p.PageMap {
			if !r.InParent {
				res.PagesRestored += r.Pages
			}
		}
	}
	for _, sh := range t.ck.Shmem {
		for _, r := range sh.Runs {
			res.PagesRestored += r.Pages
		}
	}
	res.Bytes = image.DirBytes(t.opt.Dir)
	us := func(d time.Duration) int64 { return d.Microseconds() }
	st := image.RestoreStats{
		CRVersion: image.CRVersion,
		LoadUs:    us(res.LoadTime), ForkingUs: us(res.BuildTime), VerifyWaitUs: us(res.VerifyWait),
		RestoreUs: us(res.Duration), PagesRestored: res.PagesRestored, ImageBytes: res.Bytes,
	}
	if err := image.WriteStats(t.opt.Dir, image.RestoreStatsFile, st); err != nil {
		t.logf("write %s: %v", image.RestoreStatsFile, err)
	}
}
