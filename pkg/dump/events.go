package dump

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/memdump"
)

// Phase names a step of a dump, in the order a dump reports them.
type Phase int

// The phases of a dump, in order. A dump reports Frozen and Collected
// once, Pages any number of times (Done rising to Total), then Written,
// Verified and one of Killed, Resumed or Stopped. A failed or cancelled
// dump stops reporting at the phase that failed. CheckOnly reports Frozen
// and Collected only.
const (
	Frozen    Phase = iota + 1 // every thread of the tree is seized (Event.Processes of them)
	Collected                  // the state is read: /proc and injected syscalls
	Pages                      // Event.Done of Event.Total pages copied into the image
	Written                    // the image is written (in its temporary directory)
	Verified                   // the image is read back and passes restore's checks, and is committed
	Killed                     // the tree is killed (the default)
	Resumed                    // the tree runs on (Options.LeaveRunning)
	Stopped                    // the tree is left stopped (Options.LeaveStopped)
)

var phaseNames = [...]string{"", "frozen", "collected", "pages", "written", "verified", "killed", "resumed", "stopped"}

func (p Phase) String() string {
	if p > 0 && int(p) < len(phaseNames) {
		return phaseNames[p]
	}
	return fmt.Sprintf("phase(%d)", int(p))
}

// Event is one step of a dump, passed to Options.Events.
type Event struct {
	Phase Phase
	// Done and Total count pages of process memory for Pages: Total is
	// fixed once the pages are scanned (before the first Pages event; the
	// pages shared with a parent, which the parent's file holds, and
	// shared memory objects are not counted), Done rises to it. Both are
	// also set on Written and later events, with Done == Total.
	Done, Total uint64
	// Processes is the number of processes frozen (set from Frozen on).
	Processes int
	// Elapsed is the time since Run began.
	Elapsed time.Duration
}

// events delivers Options.Events one at a time (the pages are written from
// another goroutine than the one that runs the phases).
type events struct {
	fn          func(Event)
	start       time.Time
	mu          sync.Mutex
	done, total uint64
	procs       int
}

func (e *events) emit(p Phase) {
	if e == nil || e.fn == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.fn(Event{Phase: p, Done: e.done, Total: e.total, Processes: e.procs, Elapsed: time.Since(e.start)})
}

// wrote counts bytes of process pages written (image.Writer.SetProgress).
func (e *events) wrote(n int64) {
	if e == nil || e.fn == nil {
		return
	}
	e.mu.Lock()
	e.done = min(e.done+uint64(n)/image.PageSize, e.total)
	e.mu.Unlock()
	e.emit(Pages)
}

// abortOn returns a channel closed once ctx is done or abort (may be nil)
// is closed, and a function that releases the watcher.
func abortOn(ctx context.Context, abort <-chan struct{}) (<-chan struct{}, func()) {
	if ctx.Done() == nil && abort == nil {
		return nil, func() {}
	}
	ch := make(chan struct{})
	quit := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
		case <-abort:
		case <-quit:
			return
		}
		close(ch)
	}()
	return ch, func() { close(quit) }
}

// scanPages finds the pages of every process to save (pagemap, and the
// pages still shared with the parent), before any is copied, so that the
// total is known; dumpPages copies them. It returns the number of pages
// to copy.
func (t *tree) scanPages() (uint64, error) {
	var total uint64
	for _, d := range t.procs {
		runs, err := memdump.ScanVMAs(d.pid, d.proc.VMAs)
		if err != nil {
			return 0, fmt.Errorf("scan pages of pid %d: %w", d.pid, err)
		}
		var shared []memdump.Run
		if d.parentInTree {
			// Pages still shared copy-on-write with the parent are saved there.
			if runs, shared, err = memdump.SplitShared(d.pid, d.stat.Ppid, runs, d.proc.VMAs); err != nil {
				return 0, fmt.Errorf("compare pages of pid %d with its parent: %w", d.pid, err)
			}
		}
		d.runs, d.shared = runs, shared
		for _, r := range runs {
			total += r.Pages
		}
	}
	return total, nil
}
