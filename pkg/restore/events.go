package restore

import (
	"fmt"
	"sync"
	"time"
)

// Phase names a step of a restore, in the order a restore reports them.
type Phase int

// The phases of a restore, in order. A restore reports Validated once,
// Created once, Memory any number of times (Done rising to Total; each
// process's children are forked, with their pids, once its memory is in
// place, so that pages shared at the dump are shared again), then
// Running. A failed or cancelled restore stops reporting at the phase that
// failed.
const (
	Validated Phase = iota + 1 // the image is read and checked; nothing is created yet
	Created                    // the root process exists with its pid; the others are forked from their parents as the memory is built
	Memory                     // Event.Done of Event.Total pages of memory are in place
	Running                    // every process is rebuilt and let go (or stopped: Options.LeaveStopped)
)

var phaseNames = [...]string{"", "validated", "created", "memory", "running"}

func (p Phase) String() string {
	if p > 0 && int(p) < len(phaseNames) {
		return phaseNames[p]
	}
	return fmt.Sprintf("phase(%d)", int(p))
}

// Event is one step of a restore, passed to Options.Events.
type Event struct {
	Phase Phase
	// Done and Total count pages of process memory, set from Validated on:
	// Total is every saved page of the image's processes (pages shared
	// with a parent counted in each process that maps them; shared memory
	// objects not counted), Done the pages in place so far. Running has
	// Done == Total.
	Done, Total uint64
	// Processes is the number of processes of the image (zombies too).
	Processes int
	// Elapsed is the time since Run began.
	Elapsed time.Duration
}

// events delivers Options.Events one at a time.
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

// countPages sets the total of the Memory events from the image.
func (t *treeRestore) countPages() {
	t.ev.procs = len(t.ck.Processes)
	for _, p := range t.ck.Processes {
		if p.Task.Zombie {
			continue
		}
		for _, r := range p.PageMap {
			t.ev.total += r.Pages
		}
	}
}

// filled reports pages put in place (or found in place: shared with the
// parent) and is a cancellation point of the page filling: it returns the
// context's error once Run's ctx is done.
func (t *treeRestore) filled(pages uint64) error {
	if pages > 0 {
		t.ev.mu.Lock()
		t.ev.done = min(t.ev.done+pages, t.ev.total)
		t.ev.mu.Unlock()
		t.ev.emit(Memory)
	}
	return t.cancelled()
}

// cancelled returns an error wrapping ctx.Err() once Run's ctx is done.
func (t *treeRestore) cancelled() error {
	if t.ctx == nil {
		return nil
	}
	if err := t.ctx.Err(); err != nil {
		return fmt.Errorf("restore cancelled: %w", err)
	}
	return nil
}

// RestoredProcess is one process a restore made, with its threads.
type RestoredProcess struct {
	Pid int
	// Tids lists every thread, the main one (Pid) first; nil for a zombie.
	Tids []int
	// Zombie: the process had exited and was not reaped at the dump; it
	// is restored as a zombie (it does not run).
	Zombie bool
}

// restored lists the processes made, in image order (parents first).
func (t *treeRestore) restored() []RestoredProcess {
	out := make([]RestoredProcess, 0, len(t.procs))
	for _, r := range t.procs {
		p := RestoredProcess{Pid: r.proc.Task.Pid, Zombie: r.proc.Task.Zombie}
		if !p.Zombie {
			for _, th := range r.threads {
				p.Tids = append(p.Tids, th.task.Pid)
			}
		}
		out = append(out, p)
	}
	return out
}
