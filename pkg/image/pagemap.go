package image

import "fmt"

// maxRunPages bounds a run (2^52 bytes, the x86-64 address space with
// 5-level paging), which also keeps Addr+Pages*PageSize from wrapping.
const maxRunPages = (1 << 52) / PageSize

// checkPageMap says what is wrong with a process's page map, the first
// bad run's index and the bytes of pages-PID.img the page map describes
// (header page included). The loader and the writer both use it, so that
// cr never writes a page map it would refuse to load. A valid page map:
//   - every run is page-aligned, not empty, not larger than maxRunPages,
//     and lies inside one VMA (restore fills each VMA from its own runs);
//   - runs are in ascending address order and do not overlap (runs may
//     touch; runs stored in the parent count too);
//   - a run stored here (not InParent) starts in pages-PID.img where the
//     previous stored run ended, the first one right after the header page.
func checkPageMap(vmas []VMA, runs []PageRun) (bad int, msg string, size uint64) {
	next := uint64(PageSize)
	var prevEnd uint64
	for i, pr := range runs {
		where := fmt.Sprintf("bad page run %#x+%d pages", pr.Addr, pr.Pages)
		switch {
		case pr.Pages == 0:
			return i, where + ": empty", 0
		case pr.Addr%PageSize != 0:
			return i, where + ": not page-aligned", 0
		case pr.Pages > maxRunPages || pr.Addr+pr.Pages*PageSize <= pr.Addr:
			return i, where + ": larger than the address space", 0
		case pr.Addr < prevEnd:
			return i, fmt.Sprintf("%s: overlaps or precedes the previous run, which ends at %#x", where, prevEnd), 0
		case !pr.InParent && pr.Offset != next:
			return i, fmt.Sprintf("%s: its data is at offset %d of the pages file, expected %d", where, pr.Offset, next), 0
		case !insideVMA(vmas, pr.Addr, pr.Addr+pr.Pages*PageSize):
			return i, fmt.Sprintf("page run %#x+%d pages lies outside every vma or spans two", pr.Addr, pr.Pages), 0
		}
		prevEnd = pr.Addr + pr.Pages*PageSize
		if !pr.InParent {
			next += pr.Pages * PageSize
		}
	}
	return -1, "", next
}
