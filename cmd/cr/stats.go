package main

import (
	"fmt"
	"io"
	"time"

	"github.com/cr-tools/cr/pkg/dump"
	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/restore"
)

// printDumpStats is --display-stats of cr dump: the figures of
// stats-dump.json (image.DumpStats), for people.
func printDumpStats(w io.Writer, r *dump.Result) {
	skipped := r.PagesScanned - min(r.PagesScanned, r.Pages+r.PagesInParent)
	fmt.Fprintf(w, "dump statistics:\n")
	fmt.Fprintf(w, "  frozen time            %v\n", ms(r.Frozen))
	fmt.Fprintf(w, "    freezing             %v\n", ms(r.FreezeTime))
	fmt.Fprintf(w, "    collecting state     %v\n", ms(r.CollectTime))
	fmt.Fprintf(w, "    memory dump          %v\n", ms(r.PagesTime))
	fmt.Fprintf(w, "    image check          %v\n", ms(r.CheckTime))
	fmt.Fprintf(w, "  pages scanned          %d\n", r.PagesScanned)
	fmt.Fprintf(w, "  pages skipped          %d (never touched or zero), %d shared with the parent\n", skipped, r.PagesInParent)
	fmt.Fprintf(w, "  pages written          %d (%s)\n", r.Pages, mib(int64(r.Pages)*image.PageSize))
	fmt.Fprintf(w, "  image size             %s\n", mib(r.Bytes))
	fmt.Fprintf(w, "  memory dump speed      %s\n", rate(int64(r.Pages)*image.PageSize, r.PagesTime))
}

// printRestoreStats is --display-stats of cr restore (stats-restore.json,
// image.RestoreStats).
func printRestoreStats(w io.Writer, r *restore.Result) {
	fmt.Fprintf(w, "restore statistics:\n")
	fmt.Fprintf(w, "  restore time           %v\n", ms(r.Duration))
	fmt.Fprintf(w, "    loading the image    %v\n", ms(r.LoadTime))
	fmt.Fprintf(w, "    rebuilding           %v\n", ms(r.BuildTime))
	fmt.Fprintf(w, "    checksum wait        %v\n", ms(r.VerifyWait))
	fmt.Fprintf(w, "  pages restored         %d (%s)\n", r.PagesRestored, mib(int64(r.PagesRestored)*image.PageSize))
	fmt.Fprintf(w, "  image size             %s\n", mib(r.Bytes))
	fmt.Fprintf(w, "  restore speed          %s\n", rate(int64(r.PagesRestored)*image.PageSize, r.Duration))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond)) }

func mib(b int64) string { return fmt.Sprintf("%.2f MiB", float64(b)/(1<<20)) }

// rate is bytes per second in MB/s (10^6 bytes), "-" for no time.
func rate(bytes int64, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f MB/s", float64(bytes)/d.Seconds()/1e6)
}
