package dump

import (
	"fmt"
	"time"

	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/memdump"
)

// Actions passed to Options.Notify, named as CRIU names its action-script
// points (criu/action-scripts.c). ActionNetworkLock is called once the dump
// has locked the network of the tree's established TCP connections (before
// any socket is read); ActionNetworkUnlock is restore's
// (restore.ActionNetworkUnlock), kept here for CRIU's list.
const (
	ActionPreDump       = "pre-dump"
	ActionPostDump      = "post-dump"
	ActionNetworkLock   = "network-lock"
	ActionNetworkUnlock = "network-unlock"
)

// notify calls Options.Notify for action; its error says which action
// failed.
func (t *tree) notify(action string) error {
	if t.opt.Notify == nil || t.opt.CheckOnly {
		return nil
	}
	if err := t.opt.Notify(action, t.pid); err != nil {
		return fmt.Errorf("%s: %w", action, err)
	}
	return nil
}

// writeStats completes res with the page counts and the image's size and
// writes them into the image as stats-dump.json (image.DumpStats). The file
// is not part of the image: a failure to write it is only logged.
func (t *tree) writeStats(res *Result) {
	for _, p := range t.procs {
		for i := range p.proc.VMAs {
			if memdump.SavesPages(&p.proc.VMAs[i]) {
				res.PagesScanned += p.proc.VMAs[i].Len() / image.PageSize
			}
		}
		for _, r := range p.proc.PageMap {
			if r.InParent {
				res.PagesInParent += r.Pages
			}
		}
	}
	res.Bytes = image.DirBytes(res.Dir)
	us := func(d time.Duration) int64 { return d.Microseconds() }
	st := image.DumpStats{
		CRVersion:  Version,
		FreezingUs: us(res.FreezeTime), FrozenUs: us(res.Frozen), CollectUs: us(res.CollectTime),
		MemdumpUs: us(res.PagesTime), CheckUs: us(res.CheckTime),
		PagesScanned: res.PagesScanned, PagesSkippedParent: res.PagesInParent, PagesWritten: res.Pages,
		ImageBytes: res.Bytes,
	}
	if err := image.WriteStats(res.Dir, image.DumpStatsFile, st); err != nil {
		t.logf("write %s: %v", image.DumpStatsFile, err)
	}
}
