package dump

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cr-tools/cr/internal/cpu"
	"github.com/cr-tools/cr/pkg/files"
	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/ipc"
	"github.com/cr-tools/cr/pkg/memdump"
	"github.com/cr-tools/cr/pkg/procfs"
	"github.com/cr-tools/cr/pkg/ptrace"
	"github.com/cr-tools/cr/pkg/restore"
	"golang.org/x/sys/unix"
)

// tree dumps a process and all its descendants. Every process is frozen
// (all its threads seized) before any state is read, so the image is one
// consistent moment of the whole tree.
type tree struct {
	opt     Options
	pid     int // the root
	tr      *ptrace.Tracer
	files   *files.Collector
	procs   []*dumper       // live processes, parents before children
	zombies []image.Process // processes that had exited but were not reaped
	order   []int           // every pid, parents before children
	shmem   []image.Shmem
	ipcSel  []ipc.Object   // SysV IPC objects chosen for the dump (selectIPC)
	ipc     *image.SysVIPC // and saved (dumpIPC)
	refusal error          // found while seizing (reported once the whole tree is frozen)
	netLock string         // the network lock taken (netlock.go), "" if none
	ev      *events        // Options.Events (events.go)
}

// testHookCheckpoint, when set (by tests), may change the checkpoint just
// before its metadata is written, to show that the read-back check
// catches an image restore would refuse.
var testHookCheckpoint func(*image.Checkpoint)

// aborted tells whether Options.Abort was closed.
func (t *tree) aborted() bool {
	if t.opt.Abort == nil {
		return false
	}
	select {
	case <-t.opt.Abort:
		return true
	default:
		return false
	}
}

// checkAbort returns ErrInterrupted once Options.Abort is closed.
func (t *tree) checkAbort() error {
	if t.aborted() {
		return ErrInterrupted
	}
	return nil
}

func (t *tree) logf(format string, args ...any) {
	if t.opt.Log != nil {
		fmt.Fprintf(t.opt.Log, format+"\n", args...)
	}
}

func (t *tree) run() (res *Result, err error) {
	pid := t.pid
	st, err := procfs.ReadStat(pid)
	if err != nil {
		if errors.Is(err, procfs.ErrNoProcess) {
			return nil, fmt.Errorf("process %d: %w", pid, ErrNoProcess)
		}
		return nil, err
	}
	if (st.State == 'Z' || st.State == 'X') && len(liveThreads(pid)) == 0 {
		return nil, fmt.Errorf("process %d is a zombie: %w", pid, ErrNoProcess)
	}
	if pid == os.Getpid() {
		return nil, fmt.Errorf("process %d is cr itself", pid)
	}
	// /proc/TID of a thread other than a main thread exists too.
	if s, err := procfs.ReadStatus(pid); err == nil && s.Int("Tgid") != 0 && int(s.Int("Tgid")) != pid {
		return nil, fmt.Errorf("%d is a thread of process %d, not a process: dump -t %d", pid, s.Int("Tgid"), s.Int("Tgid"))
	}
	if !t.opt.CheckOnly {
		if err := image.CheckTarget(t.opt.Dir); err != nil {
			return nil, err
		}
	}
	t.files = files.NewCollector(t.opt.ShellJob)
	t.files.GhostLimit = t.opt.GhostLimit
	t.files.ExtUnixSk = t.opt.ExtUnixSk
	t.files.FileLocks = t.opt.FileLocks
	t.tr = ptrace.NewTracer()
	t.tr.Timeout = t.opt.Timeout
	defer t.tr.Close()
	start := time.Now()
	committed := false
	defer func() { err = t.releaseAll(err, committed) }()
	// Before the processes are let go: their connections out of repair
	// mode, or released once they are killed (netlock.go).
	defer func() { err = t.finishNetwork(err, committed) }()
	if err := t.checkAbort(); err != nil {
		return nil, err
	}
	if err := t.notify(ActionPreDump); err != nil {
		return nil, err
	}
	start = time.Now()
	if err := t.seizeTree(); err != nil {
		return nil, err
	}
	freezeTime := time.Since(start)
	t.logf("froze %d processes", len(t.procs))
	t.ev.procs = len(t.procs)
	t.ev.emit(Frozen)
	if err := t.lockNetwork(); err != nil {
		return nil, err
	}
	// Processes outside the tree holding one of its sessions or groups: a
	// scan of /proc (~1 ms), run while the tree is read.
	outsiders := make(chan []error, 1)
	go func() {
		in := map[int]bool{}
		for _, p := range t.order {
			in[p] = true
		}
		outsiders <- checkOutsiders(in)
	}()
	// First what /proc tells of every process, gathering every reason to
	// refuse (so that the user fixes them all in one go), then, only if
	// there is none, what the tasks themselves must be asked.
	var refused []error
	if t.refusal != nil {
		refused = append(refused, t.refusal)
	}
	childErr := func(p *dumper, err error) error {
		if len(t.procs) > 1 && p.pid != pid {
			return fmt.Errorf("child process %d: %w", p.pid, err)
		}
		return err
	}
	for _, p := range t.procs {
		if err := t.checkAbort(); err != nil {
			return nil, err
		}
		if p.leaderless {
			continue // refused already
		}
		r, err := p.collectStatic()
		if err != nil {
			return nil, childErr(p, err)
		}
		refused = append(refused, r...)
	}
	if err := t.files.Finish(); err != nil {
		if !files.IsRefusal(err) {
			return nil, err
		}
		refused = append(refused, refusals(pid, err)...)
	}
	files.LogUnsaved(t.files, t.logf)
	refused = append(refused, t.checkSessions()...)
	if r, err := t.selectIPC(); err != nil {
		return nil, err
	} else {
		refused = append(refused, r...)
	}
	refused = append(refused, <-outsiders...)
	if len(refused) > 0 {
		return nil, &RefusedError{Pid: pid, Reasons: mergeShellJobs(refused)}
	}
	if t.opt.CheckOnly {
		t.ev.emit(Collected)
		t.logf("pre-flight: nothing refused")
		return &Result{Frozen: time.Since(start), NeedInherit: t.needInherit()}, nil
	}
	for _, p := range t.procs {
		if err := t.checkAbort(); err != nil {
			return nil, err
		}
		if err := p.collectLive(); err != nil {
			return nil, childErr(p, err)
		}
	}

	collectTime := time.Since(start) - freezeTime
	if err := t.checkAbort(); err != nil {
		return nil, err
	}
	t.ev.emit(Collected)
	w, err := image.Create(t.opt.Dir, t.opt.Sync)
	if err != nil {
		return nil, err
	}
	defer func() {
		if !committed {
			w.Abort()
		}
	}()
	w.SetAbort(t.opt.Abort)
	w.SetProgress(t.ev.wrote)
	pstart := time.Now()
	if t.ev.total, err = t.scanPages(); err != nil {
		return nil, err
	}
	var pages uint64
	for _, p := range t.procs {
		n, err := p.dumpPages(w)
		if err != nil {
			return nil, err
		}
		pages += n
	}
	if err := t.dumpShmem(w); err != nil {
		return nil, err
	}
	if err := t.dumpIPC(w); err != nil {
		return nil, err
	}
	ptime := time.Since(pstart)
	t.logf("saved %d pages (%d MiB) in %v", pages, pages*image.PageSize>>20, ptime)

	ck := &image.Checkpoint{Inventory: t.inventory(), Files: t.files.Files, Shmem: t.shmem, IPC: t.ipc}
	byPid := map[int]*image.Process{}
	for _, p := range t.procs {
		byPid[p.pid] = &p.proc
	}
	for i := range t.zombies {
		byPid[t.zombies[i].Task.Pid] = &t.zombies[i]
	}
	for _, p := range t.order {
		ck.Processes = append(ck.Processes, byPid[p])
	}
	if testHookCheckpoint != nil {
		testHookCheckpoint(ck)
	}
	if err := w.WriteMeta(ck); err != nil {
		return nil, err
	}
	t.ev.done = t.ev.total
	t.ev.emit(Written)
	cstart := time.Now()
	if err := t.checkImage(w.TempDir(), ck); err != nil {
		return nil, err
	}
	ctime := time.Since(cstart)
	t.logf("image read back and checked in %v", ctime)
	// Put the targets' registers and signal masks back before the commit, so
	// that an image exists only if the targets were left as they were found.
	for _, p := range t.procs {
		if err := p.releaseInjection(); err != nil {
			return nil, err
		}
	}
	if err := t.checkAbort(); err != nil {
		return nil, err
	}
	if err := w.Commit(); err != nil {
		return nil, err
	}
	committed = true
	t.ev.emit(Verified)
	res = &Result{Dir: w.Dir, Pages: pages, Frozen: time.Since(start), PagesTime: ptime, CheckTime: ctime, NeedInherit: t.needInherit(),
		FreezeTime: freezeTime, CollectTime: collectTime}
	t.writeStats(res)
	if err := t.notify(ActionPostDump); err != nil {
		return nil, err
	}
	return res, nil
}

// seizeTree seizes the root and then, level by level, every descendant: a
// process cannot fork once all its threads are seized, so listing its
// children afterwards gives the final set.
func (t *tree) seizeTree() error {
	queue := []int{t.pid}
	seen := map[int]bool{t.pid: true}
	enqueueChildren := func(pid int) error {
		kids, err := procfs.Children(pid)
		if err != nil {
			return err
		}
		sort.Ints(kids)
		for _, k := range kids {
			if k == os.Getpid() {
				return fmt.Errorf("cr itself (pid %d) is a descendant of process %d: cr cannot dump a tree it runs in; start it from outside that tree (another terminal, or setsid)", k, t.pid)
			}
			if !seen[k] {
				seen[k] = true
				queue = append(queue, k)
			}
		}
		return nil
	}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		st, err := procfs.ReadStat(pid)
		if err != nil {
			if pid == t.pid {
				return fmt.Errorf("process %d: %w", pid, ErrNoProcess)
			}
			continue // exited and reaped meanwhile
		}
		if st.State == 'Z' || st.State == 'X' {
			if live := liveThreads(pid); len(live) > 0 {
				// The main thread exited (pthread_exit) while others run.
				// Freeze them with the rest, refuse once all are frozen.
				d := &dumper{opt: t.opt, pid: pid, tr: t.tr, files: t.files, stat: st, parentInTree: pid != t.pid, leaderless: true}
				if err := d.seizeAll(); err != nil {
					return fmt.Errorf("process %d: %w", pid, err)
				}
				if len(d.threads) > 0 {
					t.procs = append(t.procs, d)
				}
				if t.refusal == nil {
					t.refusal = &UnsupportedError{pid, fmt.Sprintf("its main thread has exited (pthread_exit) while thread%s %s still run%s; "+
						"restore cannot recreate a thread group whose leader is gone", plural(len(live)), joinInts(live), verbS(len(live)))}
				}
				if err := enqueueChildren(pid); err != nil {
					return err
				}
				continue
			}
		}
		if st.State == 'Z' && pid != t.pid {
			t.zombies = append(t.zombies, image.Process{Task: image.Task{
				Pid: pid, Ppid: st.Ppid, Pgid: st.Pgrp, Sid: st.Session, Comm: st.Comm,
				Zombie: true, ExitStatus: st.ExitCode,
			}})
			t.order = append(t.order, pid)
			continue
		}
		d := &dumper{opt: t.opt, pid: pid, tr: t.tr, files: t.files, stat: st, parentInTree: pid != t.pid}
		if err := d.seizeAll(); err != nil {
			if pid == t.pid {
				return err
			}
			if errors.Is(err, ErrNoProcess) {
				if st2, err2 := procfs.ReadStat(pid); err2 != nil || st2.State == 'Z' || st2.State == 'X' {
					// It exited between the listing and the seize: look at
					// it again (a zombie is recorded, a reaped one skipped).
					queue = append([]int{pid}, queue...)
					continue
				}
			}
			return fmt.Errorf("child process %d: %w", pid, err)
		}
		t.procs = append(t.procs, d)
		t.order = append(t.order, pid)
		if err := enqueueChildren(pid); err != nil {
			return err
		}
	}
	return nil
}

// checkSessions (returning every refusal) makes sure every session and process group a process
// belongs to is in the image, or (with --shell-job) is the root's own, which
// restore replaces with cr's.
func (t *tree) checkSessions() []error {
	var refused []error
	in := map[int]bool{}
	for _, p := range t.order {
		in[p] = true
	}
	rootStat := t.procs[0].stat
	check := func(pid, sid, pgid int, tracer int) error {
		if !in[sid] && !(t.opt.ShellJob && sid == rootStat.Session) {
			if pid == t.pid {
				return &ShellJobError{Pid: pid, What: fmt.Sprintf("belongs to session %d, which is outside the image (started from a shell?)", sid)}
			}
			return &UnsupportedError{pid, fmt.Sprintf("session %d is outside the dumped tree", sid)}
		}
		if !in[pgid] && !(t.opt.ShellJob && pgid == rootStat.Pgrp) {
			if pid == t.pid {
				return &ShellJobError{Pid: pid, What: fmt.Sprintf("belongs to process group %d, which is outside the image", pgid)}
			}
			return &UnsupportedError{pid, fmt.Sprintf("process group %d is outside the dumped tree", pgid)}
		}
		return nil
	}
	for _, p := range t.procs {
		if p.leaderless {
			continue
		}
		if err := check(p.pid, p.stat.Session, p.stat.Pgrp, 0); err != nil {
			refused = append(refused, err)
		}
	}
	for _, z := range t.zombies {
		if err := check(z.Task.Pid, z.Task.Sid, z.Task.Pgid, 0); err != nil {
			refused = append(refused, err)
		}
	}
	return refused
}

// checkOutsiders refuses a process outside the tree that is in a session or
// process group whose id is a pid of the tree (an orphaned grandchild
// reparented away, say): it keeps that id in use, so restore could not
// create the process with its pid (clone3 with set_tid fails with EEXIST),
// nor recreate the session or group. CRIU refuses the same
// (criu/cr-dump.c, dump_one_task's session and group checks). A session or
// group outside the image (--shell-job) is not ours to check.
func checkOutsiders(in map[int]bool) []error {
	var refused []error
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return []error{fmt.Errorf("list processes: %w", err)}
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || in[pid] {
			continue
		}
		pgrp, sid, err := procfs.Groups(pid)
		if err != nil {
			continue // gone meanwhile
		}
		what, id := "", 0
		switch {
		case in[sid]:
			what, id = "session", sid
		case in[pgrp]:
			what, id = "process group", pgrp
		default:
			continue
		}
		comm := "?"
		if st, err := procfs.ReadStat(pid); err == nil {
			comm = st.Comm
		}
		refused = append(refused, fmt.Errorf("process %d (%s) is in %s %d of the dumped tree but is not part of the tree (an orphaned descendant?): "+
			"restore could not recreate the %s while it lives; end it, or dump a tree that contains it", pid, comm, what, id, what))
	}
	return refused
}

// liveThreads lists the threads of pid other than its main thread that
// have not exited: a zombie main thread with live threads is a thread
// group whose leader called pthread_exit.
func liveThreads(pid int) []int {
	tids, err := procfs.Tids(pid)
	if err != nil {
		return nil
	}
	var live []int
	for _, tid := range tids {
		if tid == pid {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/stat", pid, tid))
		if err != nil {
			continue
		}
		if st, err := procfs.ParseStat(string(b)); err == nil && st.State != 'Z' && st.State != 'X' {
			live = append(live, tid)
		}
	}
	sort.Ints(live)
	return live
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func verbS(n int) string {
	if n == 1 {
		return "s"
	}
	return ""
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ", ")
}

// checkImage reads the image back from dir with restore's own loader and
// runs every check restore makes that does not need the processes gone
// (restore.Check), then compares the page maps read back with the ones
// whose checksums were computed while the pages were written (the page
// data is not read again). An image that fails is a cr bug or an image
// restore would refuse: the dump fails and the processes run on.
func (t *tree) checkImage(dir string, ck *image.Checkpoint) error {
	got, err := restore.Check(dir)
	if err != nil {
		return fmt.Errorf("the image would not restore (%w); the dump is abandoned", err)
	}
	if len(got.Processes) != len(ck.Processes) {
		return fmt.Errorf("the image read back holds %d processes, %d were written; the dump is abandoned", len(got.Processes), len(ck.Processes))
	}
	for i, p := range ck.Processes {
		g := got.Processes[i]
		if len(g.PageMap) != len(p.PageMap) {
			return fmt.Errorf("the page map of pid %d read back has %d runs, %d were written; the dump is abandoned", p.Task.Pid, len(g.PageMap), len(p.PageMap))
		}
		for j, r := range p.PageMap {
			if g.PageMap[j] != r {
				return fmt.Errorf("page run %d of pid %d (%#x) read back differs from the one written; the dump is abandoned", j, p.Task.Pid, r.Addr)
			}
		}
	}
	if len(got.Shmem) != len(ck.Shmem) {
		return fmt.Errorf("the image read back holds %d shared memory objects, %d were written; the dump is abandoned", len(got.Shmem), len(ck.Shmem))
	}
	next := uint64(image.PageSize)
	for i, sh := range ck.Shmem {
		g := got.Shmem[i]
		if g.ID != sh.ID || g.Size != sh.Size || len(g.Runs) != len(sh.Runs) {
			return fmt.Errorf("shared memory object %d read back differs from the one written; the dump is abandoned", sh.ID)
		}
		for j, r := range sh.Runs {
			if g.Runs[j] != r || r.Offset != next {
				return fmt.Errorf("run %d of shared memory object %d read back differs from the one written; the dump is abandoned", j, sh.ID)
			}
			next += r.Pages * image.PageSize
		}
	}
	if n, m := ck.IPC.Count(), got.IPC.Count(); n != m {
		return fmt.Errorf("the image read back holds %d SysV IPC objects, %d were written; the dump is abandoned", m, n)
	}
	if len(ck.Shmem) > 0 {
		st, err := os.Stat(filepath.Join(dir, image.ShmemPagesFile))
		if err != nil {
			return fmt.Errorf("read the image back: %w", err)
		}
		if uint64(st.Size()) != next {
			return fmt.Errorf("%s has %d bytes, its runs describe %d; the dump is abandoned", image.ShmemPagesFile, st.Size(), next)
		}
	}
	return nil
}

// releaseAll lets the targets go: running as before after a failure or with
// LeaveRunning, killed after a committed dump.
func (t *tree) releaseAll(err error, committed bool) error {
	for _, p := range t.procs {
		if rerr := p.releaseInjection(); rerr != nil && err == nil {
			err = rerr
		}
	}
	if len(t.procs) == 0 {
		return err
	}
	root := t.procs[0]
	if err != nil && !errors.Is(err, ErrNoProcess) && root.gone() {
		err = fmt.Errorf("process %d vanished during the dump (%v): %w", t.pid, err, ErrNoProcess)
	}
	if err == nil && !t.opt.LeaveRunning && !t.opt.LeaveStopped && committed {
		for _, p := range t.procs {
			unix.Kill(p.pid, unix.SIGKILL)
		}
		for _, p := range t.procs {
			for i := len(p.threads) - 1; i >= 0; i-- {
				p.threads[i].task.Kill()
			}
		}
		t.logf("killed %d processes", len(t.procs))
		return nil
	}
	for _, p := range t.procs {
		for i, th := range p.threads {
			if th.task.Exited != nil {
				continue
			}
			sig := 0
			if i == 0 && err == nil && committed && t.opt.LeaveStopped {
				sig = int(unix.SIGSTOP) // --leave-stopped: the process stops at once
			}
			// (A process that was stopped stays stopped: the kernel puts a
			// detached task of a stopped group back into the group stop.)
			// Once the image is committed it is complete: a target that was
			// killed meanwhile does not make the dump fail.
			if derr := th.task.Detach(sig); derr != nil && err == nil && !(committed && p.gone()) {
				err = derr
			}
		}
	}
	if err == nil && root.threads[0].task.Exited != nil && !committed {
		err = fmt.Errorf("process %d: %w", t.pid, ErrNoProcess)
	}
	return err
}

func (t *tree) inventory() image.Inventory {
	var u unix.Utsname
	unix.Uname(&u)
	str := func(b []byte) string { return strings.TrimRight(string(b), "\x00") }
	l, err := cpu.HostLayout() // collectThread already needed it
	if err != nil {
		l = &cpu.Layout{}
	}
	return image.Inventory{
		FormatMajor: image.FormatMajor, FormatMinor: image.FormatMinor,
		CRVersion: Version, DumpTime: time.Now().UTC().Format(time.RFC3339Nano),
		Options: image.Options{LeaveRunning: t.opt.LeaveRunning, ShellJob: t.opt.ShellJob, FileLocks: t.opt.FileLocks},
		Kernel:  image.Kernel{Sysname: str(u.Sysname[:]), Release: str(u.Release[:]), Version: str(u.Version[:]), Machine: str(u.Machine[:])},
		CPU: image.CPU{Arch: "x86_64", XFeatures: l.XCR0, XSaveSize: l.Size, Vendor: cpu.Vendor(cpu.CPUID),
			XSaveLayout: image.LayoutOf(l), CPUID: image.LeavesOf(cpu.HostLeaves())},
		RootPid: t.pid, Pids: t.order, NetLock: t.imageLock(),
	}
}

// dumpPages writes the process's pages into its pages file.
func (d *dumper) dumpPages(w *image.Writer) (uint64, error) {
	pw, err := w.Pages(d.pid)
	if err != nil {
		return 0, err
	}
	runs, shared := d.runs, d.shared // scanned by scanPages (events.go)
	d.proc.PageMap, err = memdump.DumpPages(d.pid, runs, d.proc.VMAs, pw, memdump.DumpOptions{})
	if err != nil {
		return 0, err
	}
	var pages uint64
	for _, r := range d.proc.PageMap {
		pages += r.Pages
	}
	if len(shared) > 0 {
		for _, r := range shared {
			d.proc.PageMap = append(d.proc.PageMap, image.PageRun{Addr: r.Addr, Pages: r.Pages, InParent: true})
		}
		sort.Slice(d.proc.PageMap, func(i, j int) bool { return d.proc.PageMap[i].Addr < d.proc.PageMap[j].Addr })
	}
	return pages, nil
}

// dumpShmem saves every shared memory object (MAP_SHARED anonymous memory,
// memfds) once, however many processes map or hold it.
func (t *tree) dumpShmem(w *image.Writer) error {
	sources := map[uint64]memdump.ShmemSource{}
	var ids []uint64
	add := func(id uint64, path string) error {
		if _, ok := sources[id]; ok {
			return nil
		}
		name, err := os.Readlink(path)
		if err != nil {
			return err
		}
		sources[id] = memdump.ShmemSource{Path: path, Name: name}
		ids = append(ids, id)
		return nil
	}
	for _, p := range t.procs {
		for _, v := range p.proc.VMAs {
			if v.Shmem != 0 {
				if err := add(v.Shmem, fmt.Sprintf("/proc/%d/map_files/%x-%x", p.pid, v.Start, v.End)); err != nil {
					return err
				}
			}
		}
	}
	for _, p := range t.procs {
		if g := p.proc.MM.ExeGhost; g != 0 { // a deleted executable
			if err := add(g, fmt.Sprintf("/proc/%d/exe", p.pid)); err != nil {
				return err
			}
		}
	}
	for _, f := range t.files.Files {
		if f.Shmem != 0 { // a description of a shared memory object (a memfd) or a deleted file
			pid, fd := t.files.Owner(f.ID)
			if err := add(f.Shmem, fmt.Sprintf("/proc/%d/fd/%d", pid, fd)); err != nil {
				return err
			}
		}
	}
	if len(ids) == 0 {
		return nil
	}
	pw, err := w.PagesNamed(image.ShmemPagesFile)
	if err != nil {
		return err
	}
	for _, id := range ids {
		sh, err := memdump.DumpShmem(id, sources[id], pw)
		if err != nil {
			return err
		}
		t.shmem = append(t.shmem, sh)
	}
	return nil
}
