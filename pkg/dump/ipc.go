package dump

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/ipc"
)

// IPCID names one SysV IPC object: Kind is "shm", "sem" or "msg", ID its
// shmid, semid or msqid.
type IPCID struct {
	Kind string
	ID   int
}

// ParseIPCIDs parses a list like "shm:5,sem:32768,msg:3" (--ipc-id).
func ParseIPCIDs(s string) ([]IPCID, error) {
	var out []IPCID
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		kind, id, ok := strings.Cut(f, ":")
		n, err := strconv.Atoi(id)
		if !ok || err != nil || n < 0 || (kind != ipc.Shm && kind != ipc.Sem && kind != ipc.Msg) {
			return nil, fmt.Errorf("bad SysV IPC object %q: want shm:ID, sem:ID or msg:ID", f)
		}
		out = append(out, IPCID{kind, n})
	}
	return out, nil
}

// selectIPC chooses the SysV IPC objects that belong to the dump and
// returns the reasons to refuse it. The tree shares cr's IPC namespace
// with other processes, so not every object is the tree's. The rule
// (docs/DESIGN.md): every segment a process of the tree attaches; every
// semaphore set one of whose semaphores was last changed by a process of
// the tree (sempid); every message queue whose last sender or receiver
// (lspid, lrpid) is a process of the tree; plus the objects named by
// Options.IPCIDs, or, with Options.IPCAll, every object of the namespace
// (CRIU's behaviour for a dumped IPC namespace). It also reports (-v) the
// processes that hold SEM_UNDO adjustments, which are not saved.
func (t *tree) selectIPC() (refused []error, err error) {
	in := map[int]bool{}
	for _, p := range t.order {
		in[p] = true
	}
	named := map[IPCID]bool{}
	for _, id := range t.opt.IPCIDs {
		named[id] = true
	}
	lists := map[string][]ipc.Object{}
	for _, kind := range []string{ipc.Shm, ipc.Sem, ipc.Msg} {
		if lists[kind], err = ipc.List(kind); err != nil {
			return nil, err
		}
	}
	attached := map[int]bool{}
	sizes := map[int]uint64{}
	for _, o := range lists[ipc.Shm] {
		sizes[o.ID] = o.Size
	}
	for _, p := range t.procs {
		for _, v := range p.proc.VMAs {
			if v.SysVShmid != nil {
				attached[*v.SysVShmid] = true
			}
		}
		size := func(id int) (uint64, bool) { s, ok := sizes[id]; return s, ok }
		if i, msg := image.SysVAttachError(p.proc.VMAs, size); msg != "" {
			v := p.proc.VMAs[i]
			refused = append(refused, &UnsupportedError{p.pid, fmt.Sprintf("vma %#x-%#x %s", v.Start, v.End, msg)})
		}
	}
	t.ipcSel = nil
	for _, o := range lists[ipc.Shm] {
		if t.opt.IPCAll || attached[o.ID] || named[IPCID{ipc.Shm, o.ID}] {
			t.ipcSel = append(t.ipcSel, o)
			delete(named, IPCID{ipc.Shm, o.ID})
		}
	}
	for _, o := range lists[ipc.Sem] {
		take := t.opt.IPCAll || named[IPCID{ipc.Sem, o.ID}]
		if !take {
			pids, err := ipc.LastPids(&o)
			if err != nil {
				return nil, err
			}
			for _, pid := range pids {
				take = take || in[pid]
			}
		}
		if take {
			t.ipcSel = append(t.ipcSel, o)
			delete(named, IPCID{ipc.Sem, o.ID})
		}
	}
	for _, o := range lists[ipc.Msg] {
		if t.opt.IPCAll || in[o.Lspid] || in[o.Lrpid] || named[IPCID{ipc.Msg, o.ID}] {
			t.ipcSel = append(t.ipcSel, o)
			delete(named, IPCID{ipc.Msg, o.ID})
		}
	}
	for id := range named {
		return nil, fmt.Errorf("SysV IPC object %s:%d (--ipc-id) does not exist", id.Kind, id.ID)
	}
	// Undo entries exist only for semaphore sets that exist (freeary drops
	// a removed set's): with no set in the namespace there is nothing to
	// report, even for a process that has a list.
	if len(lists[ipc.Sem]) > 0 {
		pids := make([]int, len(t.procs))
		for i, p := range t.procs {
			pids[i] = p.pid
		}
		undo, err := ipc.HasSemUndo(pids)
		if err != nil {
			t.logf("cannot tell which processes have SEM_UNDO adjustments: %v", err)
		}
		for _, pid := range pids {
			if undo[pid] {
				t.logf("pid %d has a SEM_UNDO list (a semop with SEM_UNDO, or threads, which share one): any semaphore adjustments it holds are not saved, and are not undone when the dumped process exits", pid)
			}
		}
	}
	return refused, nil
}

// dumpIPC saves the chosen objects, the segments' contents into
// sysv-shm-pages.img.
func (t *tree) dumpIPC(w *image.Writer) error {
	if len(t.ipcSel) == 0 {
		return nil
	}
	s := &image.SysVIPC{}
	var pw *image.PagesWriter
	for i := range t.ipcSel {
		o := &t.ipcSel[i]
		switch o.Kind {
		case ipc.Shm:
			if pw == nil {
				var err error
				if pw, err = w.PagesNamed(image.SysVShmPagesFile); err != nil {
					return err
				}
			}
			sh, err := ipc.DumpShm(o, pw)
			if err != nil {
				return err
			}
			s.Shm = append(s.Shm, sh)
		case ipc.Sem:
			sm, err := ipc.DumpSem(o)
			if err != nil {
				return err
			}
			s.Sem = append(s.Sem, sm)
		case ipc.Msg:
			q, err := ipc.DumpMsg(o)
			if err != nil {
				return err
			}
			s.Msg = append(s.Msg, q)
		}
	}
	t.ipc = s
	t.logf("saved %d SysV segment(s), %d semaphore set(s), %d message queue(s)", len(s.Shm), len(s.Sem), len(s.Msg))
	return nil
}
