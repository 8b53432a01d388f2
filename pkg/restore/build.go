package restore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/memdump"
	"github.com/cr-tools/cr/pkg/parasite"
	"github.com/cr-tools/cr/pkg/ptrace"
	"golang.org/x/sys/unix"
)

const (
	pageSize     = image.PageSize
	scratchPages = 16
	trampSize    = (1 + scratchPages) * pageSize
	iovOff       = 16 << 10 // where iovec arrays go in the scratch area
	maxIov       = 1024     // IOV_MAX
)

// prepare turns the freshly cloned stub copy (the root process) into an
// empty address space: a trampoline, the vdso at its dumped address, and
// nothing else. Children forked from it start the same way.
func (r *restorer) prepare() error {
	cur, err := memdump.ReadSmaps(r.task.Pid)
	if err != nil {
		return err
	}
	if err := r.setupTrampoline(cur); err != nil {
		return err
	}
	if err := r.clearStub(cur); err != nil {
		return err
	}
	if err := r.placeVdso(cur); err != nil {
		return err
	}
	if t := &r.proc.Task; t.Sid == t.Pid && !r.opt.ShellJob {
		if _, err := r.sys(unix.SYS_SETSID); err != nil {
			return fmt.Errorf("setsid: %w", err)
		}
	}
	return r.takeCtty()
}

// build reshapes a prepared process into the target process; finish then
// loads its registers.
func (r *restorer) build() error {
	t0 := time.Now()
	for _, step := range []func() error{r.setRlimits, r.restoreMM, r.restoreFiles, r.setFdLimit, r.createThreads, r.restoreTask} {
		if err := step(); err != nil {
			return err
		}
		if err := r.flush(); err != nil {
			return err
		}
	}
	r.logf("pid %d rebuilt in %v (%d injected syscalls)", r.proc.Task.Pid, time.Since(t0), r.in.Count)
	return nil
}

// atFdcwd is AT_FDCWD (-100) as a syscall argument.
const atFdcwd = ^uintptr(99)

// buildMemory maps and fills the process's address space. The root starts
// from an empty one. A child was forked by its restored parent and starts
// with a copy of the parent's memory: every VMA it has in common with the
// parent (same range, private, same backing) is kept, with the pages it
// shared with the parent at the dump still shared; the rest is unmapped.
func (r *restorer) buildMemory() error {
	var keep map[int]bool
	if r != r.t.procs[0] {
		cur, err := memdump.ReadSmaps(r.task.Pid)
		if err != nil {
			return err
		}
		keep = map[int]bool{}
		byStart := map[uint64]int{}
		for i := range r.proc.VMAs {
			byStart[r.proc.VMAs[i].Start] = i
		}
		var vdso []memdump.Mapping
		for _, m := range cur {
			switch {
			case isVdsoPart(m.Path):
				vdso = append(vdso, m)
				continue
			case m.Path == "[vsyscall]", m.Start >= uint64(r.tramp) && m.End <= uint64(r.tramp)+trampSize:
				continue
			}
			if i, ok := byStart[m.Start]; ok && inheritable(&r.proc.VMAs[i], &m) {
				keep[i] = true
				continue
			}
			r.queue(fmt.Sprintf("unmap inherited mapping %#x-%#x", m.Start, m.End), unix.SYS_MUNMAP, uintptr(m.Start), uintptr(m.End-m.Start))
		}
		if err := r.flush(); err != nil {
			return err
		}
		// Its own vdso may be elsewhere (it may run another program).
		if err := r.placeVdso(vdso); err != nil {
			return err
		}
	}
	return r.mapVMAs(keep)
}

// inheritable tells whether the inherited mapping m is the VMA v.
func inheritable(v *image.VMA, m *memdump.Mapping) bool {
	if v.End != m.End || v.Has(image.VMAShared) || m.Shared() || v.Shmem != 0 || v.Has(image.VMAGrowsDown) != m.HasVmFlag("gd") {
		return false
	}
	if v.File == nil {
		return m.Inode == 0 && (m.Path == "" || m.Path == "[heap]" || m.Path == "[stack]")
	}
	return m.Inode == v.File.Ino && m.Offset == v.Pgoff
}

type span struct{ start, end uint64 }

// freeRange finds size bytes, with a free page on each side, that overlap
// none of the spans; it searches down from the top of the address space.
func freeRange(size uint64, used []span) (uint64, error) {
	sort.Slice(used, func(i, j int) bool { return used[i].start < used[j].start })
	top := uint64(0x7ffffffff000) - pageSize
	for i := len(used) - 1; i >= -1; i-- {
		lo := uint64(0x100000)
		if i >= 0 {
			lo = used[i].end + pageSize
		}
		if top > lo && top-lo >= size {
			return top - size, nil
		}
		if i >= 0 && used[i].start < top+pageSize {
			if used[i].start < pageSize {
				break
			}
			top = used[i].start - pageSize
		}
	}
	return 0, fmt.Errorf("no free %d-byte range for the restorer", size)
}

// usedSpans lists what the trampoline must avoid: the current mappings and
// every VMA of every process of the image (children inherit the trampoline).
func (r *restorer) usedSpans(cur []memdump.Mapping) []span {
	var s []span
	for _, p := range r.ck.Processes {
		for _, v := range p.VMAs {
			s = append(s, span{v.Start, v.End})
		}
	}
	for _, m := range cur {
		if m.Path != "[vsyscall]" {
			s = append(s, span{m.Start, m.End})
		}
	}
	return s
}

// setupTrampoline maps our own code page (`syscall; int3`) and scratch
// pages at an address that neither the stub nor the target uses, and moves
// injection there.
func (r *restorer) setupTrampoline(cur []memdump.Mapping) error {
	addr, err := freeRange(trampSize, r.usedSpans(cur))
	if err != nil {
		return err
	}
	got, err := r.sys(unix.SYS_MMAP, uintptr(addr), trampSize, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED_NOREPLACE, ^uintptr(0), 0)
	if err != nil {
		return fmt.Errorf("map trampoline: %w", err)
	}
	if uint64(got) != addr {
		return fmt.Errorf("trampoline landed at %#x, not %#x", got, addr)
	}
	code := make([]byte, batchOff, batchOff+len(parasite.BatchCode()))
	copy(code, []byte{0x0f, 0x05, 0xcc}) // syscall; int3: single injected syscalls
	code = append(code, parasite.BatchCode()...)
	if _, err := r.mem.WriteAt(code, int64(addr)); err != nil {
		return fmt.Errorf("write trampoline: %w", err)
	}
	if _, err := r.sys(unix.SYS_MPROTECT, uintptr(addr), pageSize, unix.PROT_READ|unix.PROT_EXEC); err != nil {
		return fmt.Errorf("protect trampoline: %w", err)
	}
	r.tramp = uintptr(addr)
	r.in.SysAddr = r.tramp
	r.threads[0].in.SysAddr = r.tramp
	r.scratch = r.tramp + pageSize
	r.scratchSize = scratchPages * pageSize
	return nil
}

func isVdsoPart(path string) bool {
	return path == "[vdso]" || path == "[vvar]" || path == "[vvar_vclock]"
}

// clearStub unmaps everything of the stub but the vdso and the trampoline.
func (r *restorer) clearStub(cur []memdump.Mapping) error {
	for _, m := range cur {
		if isVdsoPart(m.Path) || m.Path == "[vsyscall]" {
			continue
		}
		r.queue(fmt.Sprintf("unmap stub mapping %#x-%#x", m.Start, m.End), unix.SYS_MUNMAP, uintptr(m.Start), uintptr(m.End-m.Start))
	}
	return r.flush()
}

// placeVdso moves [vvar], [vvar_vclock] and [vdso] together to where they
// were at dump time: glibc caches pointers into the vdso.
func (r *restorer) placeVdso(cur []memdump.Mapping) error {
	want := map[string]*image.VMA{}
	for i := range r.proc.VMAs {
		v := &r.proc.VMAs[i]
		if v.Special == image.SpecialVdso || v.Special == image.SpecialVvar || v.Special == image.SpecialVvarVclock {
			want["["+v.Special+"]"] = v
		}
	}
	var have []memdump.Mapping
	for _, m := range cur {
		if isVdsoPart(m.Path) {
			have = append(have, m)
		}
	}
	if len(have) != len(want) {
		return fmt.Errorf("this kernel maps %d vdso areas, the image has %d: %w", len(have), len(want), ErrKernelMismatch)
	}
	if len(have) == 0 {
		return nil
	}
	delta := int64(want[have[0].Path].Start) - int64(have[0].Start)
	for _, m := range have {
		w := want[m.Path]
		if w == nil || w.Len() != m.End-m.Start || int64(w.Start)-int64(m.Start) != delta {
			return fmt.Errorf("the vdso layout of this kernel differs from the image (%s): %w", m.Path, ErrKernelMismatch)
		}
	}
	if delta == 0 {
		return nil
	}
	lo, hi := have[0].Start, have[len(have)-1].End
	dst := uint64(int64(lo) + delta)
	move := func(from, to uint64) error {
		for _, m := range have {
			off := m.Start - from
			n := uintptr(m.End - m.Start)
			if _, err := r.sys(unix.SYS_MREMAP, uintptr(m.Start), n, n, unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED, uintptr(to+off)); err != nil {
				return fmt.Errorf("move %s to %#x: %w", m.Path, to+off, err)
			}
		}
		for i := range have {
			sz := have[i].End - have[i].Start
			have[i].Start = to + (have[i].Start - from)
			have[i].End = have[i].Start + sz
		}
		return nil
	}
	if dst < hi && lo < dst+(hi-lo) {
		// Source and destination overlap: go through a free area first.
		used := r.usedSpans(have)
		used = append(used, span{uint64(r.tramp), uint64(r.tramp) + trampSize})
		tmp, err := freeRange(hi-lo, used)
		if err != nil {
			return err
		}
		if err := move(lo, tmp); err != nil {
			return err
		}
		lo = tmp
	}
	return move(lo, dst)
}

// openInTask opens path inside the task and returns the fd.
func (r *restorer) openInTask(path string, flags int) (int, error) {
	p, err := r.putString(0, path)
	if err != nil {
		return 0, err
	}
	fd, err := r.sys(unix.SYS_OPENAT, atFdcwd, p, uintptr(flags), 0)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", path, err)
	}
	return int(fd), nil
}

func protBits(p string) uintptr {
	var b uintptr
	for _, c := range p {
		switch c {
		case 'r':
			b |= unix.PROT_READ
		case 'w':
			b |= unix.PROT_WRITE
		case 'x':
			b |= unix.PROT_EXEC
		}
	}
	return b
}

var madvFlags = []struct {
	flag   string
	advice uintptr
}{
	{"hg", unix.MADV_HUGEPAGE}, {"nh", unix.MADV_NOHUGEPAGE}, {"dd", unix.MADV_DONTDUMP},
	{"dc", unix.MADV_DONTFORK}, {"wf", unix.MADV_WIPEONFORK},
}

// mapVMAs maps every VMA of the image and fills the saved pages.
func (r *restorer) mapVMAs(keep map[int]bool) error {
	p := r.proc
	hasPages := map[int]bool{}  // pages will be written into the VMA
	covered := map[int][]span{} // the VMA's saved pages, own or the parent's
	j := 0
	for _, run := range p.PageMap {
		for j < len(p.VMAs) && p.VMAs[j].End <= run.Addr {
			j++
		}
		covered[j] = append(covered[j], span{run.Addr, run.Addr + run.Pages*pageSize})
		if !(run.InParent && keep[j]) {
			hasPages[j] = true
		}
	}
	// Open every mapped file once (one batch), then map everything (a
	// second batch).
	type open struct {
		path string
		mode int
		fd   uintptr
	}
	opens := map[string]*open{}
	var order []string
	modeOf := func(v *image.VMA) int {
		if v.Has(image.VMAShared) && hasVmFlag(v, "mw") {
			return unix.O_RDWR
		}
		return unix.O_RDONLY
	}
	for i := range p.VMAs {
		v := &p.VMAs[i]
		if keep[i] || v.File == nil || v.Shmem != 0 || v.Special != "" && v.Special != image.SpecialHeap && v.Special != image.SpecialStack {
			continue
		}
		key := fmt.Sprintf("%d:%s", modeOf(v), v.File.Path)
		if opens[key] != nil {
			continue
		}
		o := &open{path: v.File.Path, mode: modeOf(v)}
		opens[key] = o
		order = append(order, key)
		path, err := r.stashString(o.path)
		if err != nil {
			return err
		}
		r.queueResult("open "+o.path, &o.fd, unix.SYS_OPENAT, atFdcwd, path, uintptr(o.mode|unix.O_CLOEXEC), 0)
	}
	if err := r.flush(); err != nil {
		return err
	}
	var shmemFds []int
	widened := []int{}
	for i := range p.VMAs {
		v := &p.VMAs[i]
		switch v.Special {
		case image.SpecialVdso, image.SpecialVvar, image.SpecialVvarVclock:
			continue
		}
		prot := protBits(v.Prot)
		if hasPages[i] && prot&unix.PROT_WRITE == 0 {
			prot |= unix.PROT_WRITE
			widened = append(widened, i)
		}
		if keep[i] {
			// Inherited: set its protection, and drop the pages the child did
			// not have at the dump (they read back as zero, or as the file).
			r.queue(fmt.Sprintf("protect vma %#x-%#x", v.Start, v.End), unix.SYS_MPROTECT, uintptr(v.Start), uintptr(v.Len()), prot)
			at := v.Start
			for _, c := range append(covered[i], span{v.End, v.End}) {
				if c.start > at {
					r.queue(fmt.Sprintf("drop pages %#x-%#x", at, c.start), unix.SYS_MADVISE, uintptr(at), uintptr(c.start-at), unix.MADV_DONTNEED)
				}
				at = max(at, c.end)
			}
			continue
		}
		if v.SysVShmid != nil {
			r.attachSysV(i)
			continue
		}
		flags := uintptr(unix.MAP_FIXED)
		if v.Has(image.VMAShared) {
			flags |= unix.MAP_SHARED
		} else {
			flags |= unix.MAP_PRIVATE
		}
		if v.Has(image.VMAGrowsDown) {
			flags |= unix.MAP_GROWSDOWN
		}
		fd := ^uintptr(0)
		if v.Shmem != 0 {
			obj, err := r.t.Shmem(v.Shmem)
			if err != nil {
				return fmt.Errorf("vma %#x-%#x: %w", v.Start, v.End, err)
			}
			f, err := r.receive(obj)
			if err != nil {
				return fmt.Errorf("vma %#x-%#x: %w", v.Start, v.End, err)
			}
			shmemFds = append(shmemFds, f)
			fd = uintptr(f)
		} else if v.File != nil {
			o := opens[fmt.Sprintf("%d:%s", modeOf(v), v.File.Path)]
			if o == nil {
				return fmt.Errorf("vma %#x-%#x: its file %s was not opened", v.Start, v.End, v.File.Path)
			}
			fd = o.fd
		} else {
			flags |= unix.MAP_ANONYMOUS
		}
		r.queueExpect(fmt.Sprintf("map vma %#x-%#x", v.Start, v.End), uintptr(v.Start),
			unix.SYS_MMAP, uintptr(v.Start), uintptr(v.Len()), prot, flags, fd, uintptr(v.Pgoff))
		for _, m := range madvFlags {
			if hasVmFlag(v, m.flag) {
				r.queue(fmt.Sprintf("madvise vma %#x-%#x", v.Start, v.End), unix.SYS_MADVISE, uintptr(v.Start), uintptr(v.Len()), m.advice)
			}
		}
	}
	for _, k := range order {
		r.queue("close", unix.SYS_CLOSE, opens[k].fd)
	}
	for _, fd := range shmemFds {
		r.queue("close", unix.SYS_CLOSE, uintptr(fd))
	}
	if err := r.flush(); err != nil {
		return err
	}
	t0 := time.Now()
	if err := r.fillPages(keep); err != nil {
		return err
	}
	r.logf("filled %d page runs in %v", len(p.PageMap), time.Since(t0))
	for _, i := range widened {
		v := &p.VMAs[i]
		r.queue(fmt.Sprintf("protect vma %#x-%#x", v.Start, v.End), unix.SYS_MPROTECT, uintptr(v.Start), uintptr(v.Len()), protBits(v.Prot))
	}
	return r.flush()
}

// shmRdonly, shmExec are shmat(2)'s flags (include/uapi/linux/shm.h).
const (
	shmRdonly = 010000
	shmExec   = 0100000
)

// attachSysV queues the attachment of a SysV segment that VMA i (and the
// VMAs after it of the same attachment: image.SysVAttachError) maps: one
// shmat of the whole segment at the dumped address, read-only when the
// VMA may not be made writable (no "mw": SHM_RDONLY), then mprotect
// where a VMA's protection differs. A VMA continuing an attachment
// (Pgoff > 0) has been handled with its first one.
func (r *restorer) attachSysV(i int) {
	v := &r.proc.VMAs[i]
	if v.Pgoff != 0 {
		return
	}
	var parts []*image.VMA
	for j := i; j < len(r.proc.VMAs); j++ {
		w := &r.proc.VMAs[j]
		if w.SysVShmid == nil || *w.SysVShmid != *v.SysVShmid || (j > i && w.Pgoff == 0) {
			break
		}
		parts = append(parts, w)
	}
	flags, prot := uintptr(0), uintptr(unix.PROT_READ|unix.PROT_WRITE)
	if !hasVmFlag(v, "mw") {
		flags, prot = shmRdonly, unix.PROT_READ
	}
	for _, w := range parts {
		if protBits(w.Prot)&unix.PROT_EXEC != 0 {
			flags |= shmExec
			prot |= unix.PROT_EXEC
		}
	}
	r.queueExpect(fmt.Sprintf("attach SysV segment %d at %#x", *v.SysVShmid, v.Start), uintptr(v.Start),
		unix.SYS_SHMAT, uintptr(*v.SysVShmid), uintptr(v.Start), flags)
	for _, w := range parts {
		if p := protBits(w.Prot); p != prot {
			r.queue(fmt.Sprintf("protect vma %#x-%#x", w.Start, w.End), unix.SYS_MPROTECT, uintptr(w.Start), uintptr(w.Len()), p)
		}
		for _, m := range madvFlags {
			if hasVmFlag(w, m.flag) {
				r.queue(fmt.Sprintf("madvise vma %#x-%#x", w.Start, w.End), unix.SYS_MADVISE, uintptr(w.Start), uintptr(w.Len()), m.advice)
			}
		}
	}
}

func hasVmFlag(v *image.VMA, f string) bool {
	for _, x := range v.VmFlags {
		if x == f {
			return true
		}
	}
	return false
}

// fillPages puts the saved pages in place.
func (r *restorer) fillPages(keep map[int]bool) error {
	if len(r.proc.PageMap) == 0 {
		return nil
	}
	// Pages shared with the parent in a kept VMA are in place already.
	proc := r.proc
	if len(keep) > 0 {
		cp := *r.proc
		cp.PageMap = nil
		j := 0
		for _, run := range r.proc.PageMap {
			for j < len(cp.VMAs) && cp.VMAs[j].End <= run.Addr {
				j++
			}
			if !(run.InParent && keep[j]) {
				cp.PageMap = append(cp.PageMap, run)
			} else if err := r.t.filled(run.Pages); err != nil { // in place already
				return err
			}
		}
		proc = &cp
	}
	pieces, err := r.t.pagePieces(proc)
	if err != nil {
		return err
	}
	if r.opt.Fill == "writev" {
		return r.fillWritev(pieces)
	}
	fds := map[int]int{} // pid whose pages file -> fd in the task
	defer func() {
		for _, fd := range fds {
			r.sys(unix.SYS_CLOSE, uintptr(fd))
		}
	}()
	iov := make([]byte, 0, maxIov*16)
	for i := 0; i < len(pieces); {
		src := pieces[i].src
		fd, ok := fds[src]
		if !ok {
			// cr opens the pages file and hands it over (SCM_RIGHTS): the
			// task needs no access to the image directory.
			f, err := image.OpenPages(r.opt.Dir, src)
			if err != nil {
				return err
			}
			fd, err = r.receive(int(f.Fd()))
			f.Close()
			if err != nil {
				return err
			}
			fds[src] = fd
		}
		// One preadv per stretch of the same file that is contiguous there.
		iov = iov[:0]
		off := pieces[i].off
		var total uint64
		for ; i < len(pieces) && len(iov) < cap(iov) && pieces[i].src == src && pieces[i].off == off+total &&
			total+pieces[i].len <= maxBatch; i++ {
			iov = binary.LittleEndian.AppendUint64(iov, pieces[i].addr)
			iov = binary.LittleEndian.AppendUint64(iov, pieces[i].len)
			total += pieces[i].len
		}
		addr, err := r.put(iovOff, iov)
		if err != nil {
			return err
		}
		got, err := r.sys(unix.SYS_PREADV, uintptr(fd), addr, uintptr(len(iov)/16), uintptr(off), 0)
		if err != nil {
			return fmt.Errorf("read pages at offset %d: %w", off, err)
		}
		if uint64(got) != total {
			return fmt.Errorf("read pages at offset %d: got %d of %d bytes (pages file cut short?)", off, got, total)
		}
		if err := r.t.filled(total / pageSize); err != nil {
			return err
		}
	}
	return nil
}

// maxBatch bounds one preadv (the kernel caps a read at about 2 GiB; 64
// MiB keeps the progress events and cancellation points frequent).
const maxBatch = 64 << 20

// piece is a stretch of pages to fill: at addr, len bytes, from the pages
// file of process src at offset off.
type piece struct {
	addr, len, off uint64
	src            int
}

// pagePieces lists where every saved page of p comes from: its own pages
// file, or, for pages shared with its parent since a fork, the pages file
// of the ancestor that saved them.
func (t *treeRestore) pagePieces(p *image.Process) ([]piece, error) {
	return t.pagePiecesDepth(p, 0)
}

func (t *treeRestore) pagePiecesDepth(p *image.Process, depth int) ([]piece, error) {
	if depth > len(t.ck.Processes) {
		return nil, fmt.Errorf("image is inconsistent: the chain of parents of pid %d loops", p.Task.Pid)
	}
	var out []piece
	for _, run := range p.PageMap {
		if !run.InParent {
			for done := uint64(0); done < run.Pages*pageSize; {
				n := min(run.Pages*pageSize-done, maxBatch)
				out = append(out, piece{run.Addr + done, n, run.Offset + done, p.Task.Pid})
				done += n
			}
			continue
		}
		parent := t.byPid[p.Task.Ppid]
		if parent == nil {
			return nil, fmt.Errorf("image is inconsistent: pid %d has pages in its parent %d, which is not in the image", p.Task.Pid, p.Task.Ppid)
		}
		up, err := t.pagePiecesDepth(&image.Process{Task: parent.proc.Task, PageMap: clipRuns(parent.proc.PageMap, run.Addr, run.Addr+run.Pages*pageSize)}, depth+1)
		if err != nil {
			return nil, err
		}
		var got uint64
		for _, u := range up {
			got += u.len
		}
		if got != run.Pages*pageSize {
			return nil, fmt.Errorf("image is inconsistent: pages %#x+%d of pid %d are not in its parent's image", run.Addr, run.Pages, p.Task.Pid)
		}
		out = append(out, up...)
	}
	return out, nil
}

// clipRuns returns the parts of runs inside [start, end).
func clipRuns(runs []image.PageRun, start, end uint64) []image.PageRun {
	var out []image.PageRun
	for _, r := range runs {
		rs, re := r.Addr, r.Addr+r.Pages*pageSize
		lo, hi := max(rs, start), min(re, end)
		if lo >= hi {
			continue
		}
		c := r
		c.Addr = lo
		c.Pages = (hi - lo) / pageSize
		if !r.InParent {
			c.Offset = r.Offset + (lo - rs)
		}
		out = append(out, c)
	}
	return out
}

// fillWritev pushes pages from cr with process_vm_writev.
func (r *restorer) fillWritev(pieces []piece) error {
	files := map[int]*os.File{}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	buf := make([]byte, 8<<20)
	for _, pc := range pieces {
		f, ok := files[pc.src]
		if !ok {
			var err error
			if f, err = image.OpenPages(r.opt.Dir, pc.src); err != nil {
				return err
			}
			files[pc.src] = f
		}
		for done := uint64(0); done < pc.len; {
			n := min(uint64(len(buf)), pc.len-done)
			if _, err := f.ReadAt(buf[:n], int64(pc.off+done)); err != nil {
				return fmt.Errorf("read pages file: %w", err)
			}
			local := []unix.Iovec{{Base: &buf[0]}}
			local[0].SetLen(int(n))
			got, err := ptrace.WriteVM(r.task.Pid, local, []unix.RemoteIovec{{Base: uintptr(pc.addr + done), Len: int(n)}})
			if err != nil {
				return err
			}
			if uint64(got) != n {
				return fmt.Errorf("short write of pages at %#x", pc.addr+done)
			}
			done += n
			if err := r.t.filled(n / pageSize); err != nil {
				return err
			}
		}
	}
	return nil
}

// createThreads clones every other thread with its original tid from the
// main thread (clone3 with set_tid; PTRACE_O_TRACECLONE attaches it). Each
// new thread stops before running any code of its own.
func (r *restorer) createThreads() error {
	const flags = unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND |
		unix.CLONE_THREAD | unix.CLONE_SYSVSEM
	for _, th := range r.proc.Threads[1:] {
		// struct clone_args (80 bytes), then set_tid[1].
		args := le64(flags, 0, 0, 0, 0, 0, 0, 0, uint64(r.scratch+80), 1, uint64(th.Tid))
		addr, err := r.put(0, args)
		if err != nil {
			return err
		}
		got, err := r.sys(unix.SYS_CLONE3, addr, 80)
		if err != nil {
			if errors.Is(err, unix.EEXIST) {
				return r.checkPidOr(th.Tid, err)
			}
			return fmt.Errorf("create thread %d (clone3 set_tid): %w", th.Tid, err)
		}
		if int(got) != th.Tid {
			return fmt.Errorf("clone3 gave thread %d, wanted %d", got, th.Tid)
		}
		task := r.tr.Adopt(th.Tid)
		task.Timeout = r.opt.Timeout
		// Registered before the wait, so a failure from here on kills it too.
		r.threads = append(r.threads, &rthread{task: task})
		if _, err := task.Wait(); err != nil {
			return fmt.Errorf("wait for new thread %d: %w", th.Tid, err)
		}
		in, err := parasite.New(task, r.tramp)
		if err != nil {
			return err
		}
		r.threads[len(r.threads)-1].in = in
	}
	if len(r.proc.Threads) > 1 {
		r.logf("created %d threads", len(r.proc.Threads)-1)
	}
	return nil
}
