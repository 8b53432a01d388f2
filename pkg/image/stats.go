package image

import (
	"encoding/json"
	"os"
	"path/filepath"
)

// Stats files (format 1.3): what a dump or a restore measured, written into
// the image directory as CRIU writes stats-dump and stats-restore. They are
// plain JSON files, not framed and not checksummed, and not part of the
// image: no reader needs them, Load ignores them, and a restore rewrites
// stats-restore.json each time (when the directory is writable).
const (
	DumpStatsFile    = "stats-dump.json"
	RestoreStatsFile = "stats-restore.json"
)

// DumpStats is stats-dump.json. Times are microseconds; field names follow
// CRIU's DumpStatsEntry (images/stats.proto) where one exists.
type DumpStats struct {
	CRVersion string `json:"cr_version"`
	// FreezingUs is the time to seize (stop) every thread of the tree;
	// FrozenUs the time the tree stayed stopped, up to the commit of the
	// image (the kill or the resume follows at once).
	FreezingUs int64 `json:"freezing_time_us"`
	FrozenUs   int64 `json:"frozen_time_us"`
	// CollectUs: reading the state (/proc, injected syscalls); MemdumpUs:
	// finding and copying the pages; CheckUs: reading the image back with
	// restore's checks before the commit.
	CollectUs int64 `json:"collect_time_us"`
	MemdumpUs int64 `json:"memdump_time_us"`
	CheckUs   int64 `json:"check_time_us"`
	// PagesScanned: pages of the mappings whose pages are saved;
	// PagesSkippedParent: pages shared copy-on-write with the parent,
	// stored once there; PagesWritten: pages written to pages-PID.img
	// files. Scanned pages neither written nor in the parent were never
	// touched, or only read (the zero page).
	PagesScanned       uint64 `json:"pages_scanned"`
	PagesSkippedParent uint64 `json:"pages_skipped_parent"`
	PagesWritten       uint64 `json:"pages_written"`
	// ImageBytes is the size of the image's files (this file aside).
	ImageBytes int64 `json:"image_bytes"`
}

// RestoreStats is stats-restore.json. Times are microseconds.
type RestoreStats struct {
	CRVersion string `json:"cr_version"`
	// LoadUs: reading and checking the image before anything is created;
	// ForkingUs: rebuilding the processes (creating them, their memory,
	// files and state); VerifyWaitUs: waiting for the page checksums
	// checked meanwhile; RestoreUs: the whole restore.
	LoadUs        int64  `json:"load_time_us"`
	ForkingUs     int64  `json:"forking_time_us"`
	VerifyWaitUs  int64  `json:"verify_wait_time_us"`
	RestoreUs     int64  `json:"restore_time_us"`
	PagesRestored uint64 `json:"pages_restored"`
	ImageBytes    int64  `json:"image_bytes"`
}

// WriteStats writes v as indented JSON into dir/name (mode 0600, replacing
// any older file).
func WriteStats(dir, name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// DirBytes is the total size of the regular files in dir, the stats files
// aside.
func DirBytes(dir string) int64 {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var n int64
	for _, e := range ents {
		if e.Name() == DumpStatsFile || e.Name() == RestoreStatsFile || !e.Type().IsRegular() {
			continue
		}
		if info, err := e.Info(); err == nil {
			n += info.Size()
		}
	}
	return n
}
