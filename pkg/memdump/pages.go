package memdump

import (
	"encoding/binary"
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/ptrace"
	"golang.org/x/sys/unix"
)

// PAGEMAP_SCAN (linux/fs.h, Linux 6.7).
const (
	pagemapScan = 0xC0606610 // _IOWR('f', 16, struct pm_scan_arg)

	pageIsFile    = 1 << 2
	pageIsPresent = 1 << 3
	pageIsSwapped = 1 << 4
	pageIsPFNZero = 1 << 5
)

type pmScanArg struct {
	Size, Flags, Start, End, WalkEnd, Vec, VecLen, MaxPages       uint64
	CategoryInverted, CategoryMask, CategoryAnyofMask, ReturnMask uint64
}

type pageRegion struct{ Start, End, Categories uint64 }

// Run is a range of pages to save.
type Run struct {
	Addr  uint64
	Pages uint64
	// Shared: the pages are mapped by another process too (copy-on-write
	// after a fork), so they must not be read with process_vm_readv.
	Shared bool
}

// SavesPages reports whether a VMA's pages are saved at all.
func SavesPages(v *image.VMA) bool {
	// (A private mapping of a shared memory object saves its own
	// copy-on-write pages like any private file mapping.)
	return !v.Has(image.VMAShared) && v.Special != image.SpecialVdso &&
		v.Special != image.SpecialVvar && v.Special != image.SpecialVvarVclock
}

// Scanner finds the pages worth saving, with PAGEMAP_SCAN.
type Scanner struct {
	f   *os.File
	vec []pageRegion
}

// NewScanner opens /proc/PID/pagemap.
func NewScanner(pid int) (*Scanner, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		return nil, err
	}
	return &Scanner{f: f, vec: make([]pageRegion, 1024)}, nil
}

// Close releases the pagemap file.
func (s *Scanner) Close() error { return s.f.Close() }

// Scan appends to runs the pages of [start, end) that are present or
// swapped, anonymous (not file pages) and not the zero page. Runs come out
// in ascending address order, never overlapping, and a region adjacent to
// the last run of runs extends it (callers split at VMA boundaries).
//
// PAGEMAP_SCAN (fs/proc/task_mmu.c, do_pagemap_scan) fills the caller's
// vector through a kernel bounce buffer of at most 512 regions, one page
// walk per bounce buffer. walk_end is set only when a walk stops early, and
// is not reset when a later walk of the same call completes: a call that
// needs two or more walks and then reaches the end of the range reports
// the stop of an earlier walk as walk_end, before regions it has already
// returned. Starting the next call there would report those regions again
// (with 256 MiB and every 2nd page written, the last 512 runs came twice,
// and the loader rejected the overlapping page map). So:
//   - a call that returns fewer regions than the vector holds has walked to
//     the end of the range: the scan is complete whatever walk_end says;
//   - otherwise the next call starts at walk_end or at the end of the last
//     region returned, whichever is higher;
//   - a region that starts below the end of the previous run is clipped
//     (never seen since the two rules above, kept as a guard).
func (s *Scanner) Scan(start, end uint64, runs []Run) ([]Run, error) {
	for start < end {
		arg := pmScanArg{
			Size: uint64(unsafe.Sizeof(pmScanArg{})), Start: start, End: end,
			Vec: uint64(uintptr(unsafe.Pointer(&s.vec[0]))), VecLen: uint64(len(s.vec)),
			CategoryInverted:  pageIsFile | pageIsPFNZero,
			CategoryMask:      pageIsFile | pageIsPFNZero,
			CategoryAnyofMask: pageIsPresent | pageIsSwapped,
			ReturnMask:        pageIsPresent | pageIsSwapped,
		}
		n, _, e := unix.Syscall(unix.SYS_IOCTL, s.f.Fd(), pagemapScan, uintptr(unsafe.Pointer(&arg)))
		if e != 0 {
			return runs, fmt.Errorf("PAGEMAP_SCAN %#x-%#x: %w", start, end, e)
		}
		if n > uintptr(len(s.vec)) {
			return runs, fmt.Errorf("PAGEMAP_SCAN %#x-%#x returned %d regions for a vector of %d", start, end, n, len(s.vec))
		}
		next := arg.WalkEnd
		for _, r := range s.vec[:n] {
			if r.Start%image.PageSize != 0 || r.End%image.PageSize != 0 || r.Start >= r.End || r.Start < start || r.End > end {
				return runs, fmt.Errorf("PAGEMAP_SCAN %#x-%#x returned the region %#x-%#x", start, end, r.Start, r.End)
			}
			next = max(next, r.End)
			if l := len(runs); l > 0 {
				prev := runs[l-1]
				last := prev.Addr + prev.Pages*image.PageSize
				if r.Start < last {
					if r.Start < prev.Addr {
						return runs, fmt.Errorf("PAGEMAP_SCAN %#x-%#x returned the region %#x-%#x below the run %#x-%#x", start, end, r.Start, r.End, prev.Addr, last)
					}
					if r.End <= last {
						continue // reported already
					}
					r.Start = last
				}
				if r.Start == last {
					runs[l-1].Pages += (r.End - r.Start) / image.PageSize
					continue
				}
			}
			runs = append(runs, Run{Addr: r.Start, Pages: (r.End - r.Start) / image.PageSize})
		}
		if n < uintptr(len(s.vec)) {
			break // the walk reached end
		}
		if next <= start {
			return runs, fmt.Errorf("PAGEMAP_SCAN %#x-%#x made no progress", start, end)
		}
		start = next
	}
	return runs, nil
}

// ScanVMAs returns the runs of pages to save for every VMA that saves pages.
func ScanVMAs(pid int, vmas []image.VMA) ([]Run, error) {
	s, err := NewScanner(pid)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	var runs []Run
	for i := range vmas {
		v := &vmas[i]
		if !SavesPages(v) {
			continue
		}
		runs, err = s.Scan(v.Start, v.End, runs)
		if err != nil {
			return nil, err
		}
	}
	return splitAtVMAs(runs, vmas), nil
}

// splitAtVMAs makes sure no run spans two VMAs (the scanner merges
// adjacent regions, and VMAs can be adjacent).
func splitAtVMAs(runs []Run, vmas []image.VMA) []Run {
	var out []Run
	j := 0
	for _, r := range runs {
		for r.Pages > 0 {
			for j < len(vmas) && vmas[j].End <= r.Addr {
				j++
			}
			end := r.Addr + r.Pages*image.PageSize
			if j < len(vmas) && vmas[j].End < end {
				n := (vmas[j].End - r.Addr) / image.PageSize
				out = append(out, Run{Addr: r.Addr, Pages: n, Shared: r.Shared})
				r.Addr += n * image.PageSize
				r.Pages -= n
				continue
			}
			out = append(out, r)
			break
		}
	}
	return out
}

// DumpOptions tune page dumping.
type DumpOptions struct {
	BufSize int // bytes per batch buffer (default 4 MiB)
	Buffers int // buffers in flight (default 4)
	// ProcMemOnly reads everything through /proc/PID/mem. By default,
	// pages mapped only by the target are read with process_vm_readv, which
	// is faster, and the others through /proc/PID/mem: process_vm_readv pins
	// the pages it reads, and pinning an anonymous page shared
	// copy-on-write with another process unshares it (mm/gup.c,
	// gup_must_unshare), so the target's memory would grow by every page it
	// shares with a parent or child. /proc/PID/mem does not pin.
	ProcMemOnly bool
}

type batch struct {
	buf    []byte
	used   int // bytes of buf filled
	pieces []piece
	err    error
}

type piece struct {
	run int // index into the output runs
	len int
}

// DumpPages copies the pages of runs from pid into w, reading with
// process_vm_readv (or /proc/PID/mem for unreadable VMAs) on one goroutine
// while another writes, and returns the page map with a CRC per run.
func DumpPages(pid int, runs []Run, vmas []image.VMA, w *image.PagesWriter, opt DumpOptions) ([]image.PageRun, error) {
	// 4 MiB x 4 measured as fast as 8 MiB x 3 or faster (1 GiB dumps,
	// interleaved runs), with less memory.
	if opt.BufSize <= 0 {
		opt.BufSize = 4 << 20
	}
	if opt.Buffers <= 0 {
		opt.Buffers = 4
	}
	if !opt.ProcMemOnly {
		var err error
		if runs, err = markShared(pid, runs); err != nil {
			return nil, err
		}
	}
	out := make([]image.PageRun, len(runs))
	off := uint64(w.Offset())
	for i, r := range runs {
		out[i] = image.PageRun{Addr: r.Addr, Pages: r.Pages, Offset: off}
		off += r.Pages * image.PageSize
	}
	if len(runs) == 0 {
		return out, nil
	}
	readable := func(addr uint64) bool {
		for i := range vmas {
			if vmas[i].Start <= addr && addr < vmas[i].End {
				return vmas[i].Prot != "-" && vmas[i].Prot[0] == 'r'
			}
		}
		return false
	}
	var mem *os.File
	defer func() {
		if mem != nil {
			mem.Close()
		}
	}()

	if total := (off - uint64(w.Offset())); total < uint64(opt.BufSize)*uint64(opt.Buffers) {
		// Small dumps: don't allocate (and zero) more than needed.
		opt.BufSize = int((total/uint64(opt.Buffers) + image.PageSize - 1) &^ (image.PageSize - 1))
	}
	free := make(chan *batch, opt.Buffers)
	full := make(chan *batch, opt.Buffers)
	for i := 0; i < opt.Buffers; i++ {
		free <- &batch{buf: make([]byte, opt.BufSize)}
	}
	done := make(chan error, 1)
	// stop tells the reader that the writer failed (or was aborted: the
	// dump is being interrupted): reading on would only keep the target
	// frozen longer.
	var stop atomic.Bool
	go func() { // writer: the page-cache write is the slowest stage
		var err error
		for b := range full {
			if err == nil && b.err != nil {
				err = b.err
			}
			if err == nil {
				err = w.Write(b.buf[:b.used])
				if err != nil {
					stop.Store(true)
				}
			}
			b.pieces = b.pieces[:0]
			b.err = nil
			b.used = 0
			free <- b
		}
		done <- err
	}()

	// Reader: fill batches with pieces of runs.
	local := make([]unix.Iovec, 0, 1024)
	remote := make([]unix.RemoteIovec, 0, 1024)
	var readErr error
	ri, roff := 0, uint64(0) // current run and byte offset inside it
	for ri < len(runs) && readErr == nil && !stop.Load() {
		b := <-free
		used := 0
		local, remote = local[:0], remote[:0]
		flush := func() {
			if len(remote) == 0 || b.err != nil {
				return
			}
			want := 0
			for _, r := range remote {
				want += r.Len
			}
			n, err := ptrace.ReadVM(pid, local, remote)
			if err == nil && n != want {
				err = fmt.Errorf("short read of process memory at %#x (%d of %d bytes): the address space changed", remote[0].Base, n, want)
			}
			b.err = err
			local, remote = local[:0], remote[:0]
		}
		for ri < len(runs) && used < len(b.buf) && len(remote) < cap(remote) && b.err == nil {
			r := runs[ri]
			total := r.Pages * image.PageSize
			n := total - roff
			if n > uint64(len(b.buf)-used) {
				n = uint64(len(b.buf) - used)
			}
			addr := r.Addr + roff
			if !opt.ProcMemOnly && !r.Shared && readable(addr) {
				iov := unix.Iovec{Base: &b.buf[used]}
				iov.SetLen(int(n))
				local = append(local, iov)
				remote = append(remote, unix.RemoteIovec{Base: uintptr(addr), Len: int(n)})
			} else {
				flush()
				if mem == nil {
					mem, b.err = ptrace.ProcMem(pid)
				}
				if b.err == nil {
					_, b.err = mem.ReadAt(b.buf[used:used+int(n)], int64(addr))
				}
			}
			b.pieces = append(b.pieces, piece{run: ri, len: int(n)})
			used += int(n)
			roff += n
			if roff == total {
				ri, roff = ri+1, 0
			}
		}
		flush()
		if b.err != nil {
			readErr = fmt.Errorf("read pages of pid %d: %w", pid, b.err)
		} else {
			// Checksum here, while the batch is hot in the cache, so that
			// the writer only writes (measured on 1 GiB dumps, interleaved with
			// the old code: 5-15% more throughput; the write is the bottleneck).
			off := 0
			for _, p := range b.pieces {
				out[p.run].CRC = image.UpdateCRC(out[p.run].CRC, b.buf[off:off+p.len])
				off += p.len
			}
		}
		b.used = used
		full <- b
	}
	close(full)
	werr := <-done
	if readErr != nil {
		return nil, readErr
	}
	if werr != nil {
		return nil, werr
	}
	return out, nil
}

// markShared splits runs where pages stop or start being mapped by another
// process too (pagemap bit 56, "exclusively mapped", is clear).
//
// Runs close to each other (at most markGap pages apart) share one read of
// /proc/PID/pagemap: with many small runs (a page written every 2nd page),
// one read per run cost more than reading the pages.
func markShared(pid int, runs []Run) ([]Run, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	const (
		exclusive = 1 << 56
		window    = 1 << 16 // pagemap entries a read
		markGap   = 512     // pages of a gap read rather than skipped
	)
	var out []Run
	buf := make([]byte, 8*window)
	for i := 0; i < len(runs); {
		// Group runs i..j-1: close together, within one window.
		lo := runs[i].Addr
		hi := lo + runs[i].Pages*image.PageSize
		j := i + 1
		for j < len(runs) && runs[j].Addr >= hi && runs[j].Addr-hi <= markGap*image.PageSize &&
			runs[j].Addr+runs[j].Pages*image.PageSize-lo <= window*image.PageSize {
			hi = runs[j].Addr + runs[j].Pages*image.PageSize
			j++
		}
		for k := i; k < j; k++ {
			r := runs[k]
			first := len(out) // never merge across runs (they may end at a VMA boundary)
			for done := uint64(0); done < r.Pages; {
				addr := r.Addr + done*image.PageSize
				n := min(r.Pages-done, window)
				var ents []byte
				if j > i+1 || r.Pages <= window {
					// The group was read once (below, at its first run).
					if k == i && done == 0 {
						if _, err := f.ReadAt(buf[:(hi-lo)/image.PageSize*8], int64(lo/image.PageSize*8)); err != nil {
							return nil, fmt.Errorf("read pagemap of pid %d: %w", pid, err)
						}
					}
					ents = buf[(addr-lo)/image.PageSize*8:]
				} else {
					// A run larger than a window, alone: in windows.
					if _, err := f.ReadAt(buf[:n*8], int64(addr/image.PageSize*8)); err != nil {
						return nil, fmt.Errorf("read pagemap of pid %d: %w", pid, err)
					}
					ents = buf
				}
				for x := uint64(0); x < n; x++ {
					e := binary.LittleEndian.Uint64(ents[x*8:])
					shared := e&exclusive == 0
					a := addr + x*image.PageSize
					if l := len(out); l > first && out[l-1].Shared == shared && out[l-1].Addr+out[l-1].Pages*image.PageSize == a {
						out[l-1].Pages++
					} else {
						out = append(out, Run{Addr: a, Pages: 1, Shared: shared})
					}
				}
				done += n
			}
		}
		i = j
	}
	return out, nil
}
