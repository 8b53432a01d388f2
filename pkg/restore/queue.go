package restore

import (
	"fmt"

	"github.com/cr-tools/cr/pkg/parasite"
)

// Injected syscalls that need no answer before the next one are queued and
// run together as one batch (parasite.Batch: one stop instead of one per
// syscall, ~1 µs instead of ~60 µs each). The data they point to is stashed
// in an arena of the scratch area that lives until the batch has run.
//
// Scratch area layout (scratchPages pages after the trampoline's code page):
//
//	[0, 16K)    immediate calls: strings, structs, msghdr (put)
//	[16K, 32K)  iovec arrays for preadv
//	[32K, 40K)  the batch table
//	[40K, 64K)  the arena for queued calls' data (stash)
const (
	tableOff  = 32 << 10
	tableSize = 8 << 10
	arenaOff  = 40 << 10
	arenaEnd  = 64 << 10
	batchOff  = 64 // BatchCode's offset in the trampoline's code page
)

type queued struct {
	call   parasite.Call
	what   string
	expect *uintptr // the result it must return, if any
	dst    *uintptr // where to put the result, if wanted
}

// queue adds an injected syscall to the pending batch. what names it in an
// error.
func (r *restorer) queue(what string, nr uintptr, args ...uintptr) {
	q := queued{what: what}
	q.call.Nr = nr
	copy(q.call.Args[:], args)
	r.pending = append(r.pending, q)
}

// queueExpect is queue for a call that must return want (mmap at a fixed
// address).
func (r *restorer) queueExpect(what string, want uintptr, nr uintptr, args ...uintptr) {
	r.queue(what, nr, args...)
	r.pending[len(r.pending)-1].expect = &want
}

// queueResult is queue for a call whose result is wanted: flush stores it
// in *dst.
func (r *restorer) queueResult(what string, dst *uintptr, nr uintptr, args ...uintptr) {
	r.queue(what, nr, args...)
	r.pending[len(r.pending)-1].dst = dst
}

// flush runs the pending batch; the first failure is the error.
func (r *restorer) flush() error {
	calls := r.pending
	r.pending = nil
	r.arena = 0
	per := tableSize/parasite.BatchEntrySize - 1
	for i := 0; i < len(calls); i += per {
		chunk := calls[i:min(i+per, len(calls))]
		cs := make([]parasite.Call, len(chunk))
		for j, q := range chunk {
			cs[j] = q.call
		}
		rs, err := r.in.Batch(r.tramp+batchOff, r.scratch+tableOff, cs)
		if err != nil {
			return fmt.Errorf("injected batch: %w", err)
		}
		for j, res := range rs {
			if err := res.Err(); err != nil {
				return fmt.Errorf("%s: %w", chunk[j].what, err)
			}
			if w := chunk[j].expect; w != nil && res.Val != *w {
				return fmt.Errorf("%s: got %#x, want %#x", chunk[j].what, res.Val, *w)
			}
			if d := chunk[j].dst; d != nil {
				*d = res.Val
			}
		}
	}
	return nil
}

// stash copies b into the arena for a queued call and returns its address;
// a full arena runs the pending batch first.
func (r *restorer) stash(b []byte) (uintptr, error) {
	n := uintptr(len(b)+7) &^ 7
	if arenaOff+r.arena+n > arenaEnd {
		if n > arenaEnd-arenaOff {
			return 0, fmt.Errorf("%d bytes do not fit the scratch arena", len(b))
		}
		if err := r.flush(); err != nil {
			return 0, err
		}
	}
	addr := r.scratch + arenaOff + r.arena
	if _, err := r.mem.WriteAt(b, int64(addr)); err != nil {
		return 0, fmt.Errorf("write scratch memory: %w", err)
	}
	r.arena += n
	return addr, nil
}

// stashString stashes a NUL-terminated string.
func (r *restorer) stashString(s string) (uintptr, error) { return r.stash(append([]byte(s), 0)) }
