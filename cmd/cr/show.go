package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/cr-tools/cr/pkg/files"
	"github.com/cr-tools/cr/pkg/image"
)

// showViews are the views of `cr show -i DIR VIEW`, as crit's `crit x DIR
// VIEW`: each gives rows, printed as a table or (--json) as a JSON array.
var showViews = map[string]func(c *image.Checkpoint) (rows any, table func(io.Writer)){
	"ps":      viewPs,
	"fds":     viewFds,
	"mems":    viewMems,
	"rss":     viewRss,
	"files":   viewFiles,
	"sockets": viewSockets,
	"ipc":     viewIPC,
}

func cmdShow(args []string) (int, error) {
	c := newCommand("show", "cr show -i DIR [VIEW] [--json] | cr show -i DIR --file NAME",
		`Check and print the image in DIR: a summary, or one VIEW of it (as crit x):
  ps       the process tree: pid, ppid, pgid, sid, state, comm, threads
  fds      per process: fd, kind, path or peer, flags, offset; cwd and root
  mems     per process: the mappings, with the pages saved for each
  rss      per process: the saved page runs and where they are stored
  files    the open file descriptions and the fds that share each
  sockets  the sockets among them
  ipc      the SysV IPC objects
--json prints the same as JSON; every 64-bit value is a "0x..." hex string
(a signed one beyond 2^53 a decimal string) so that jq reads it exactly.
--file decodes one image file on its own (JSON). A CRIU image directory is
recognised by its magic numbers and said so: cr cannot read CRIU images.`,
		"cr show -i /var/tmp/img",
		"cr show -i /var/tmp/img ps",
		"cr show -i /var/tmp/img --json | jq -r '.processes[0].threads[0].regs.rip'",
		"cr show -i /var/tmp/img --file core-1234.img")
	dir := c.fs.String("i", "", "image directory `DIR` (required)")
	c.alias("i", "D", "images-dir")
	js := c.fs.Bool("json", false, "print JSON (64-bit values as hex strings)")
	file := c.fs.String("file", "", "decode only the image file `NAME` of DIR (e.g. core-1234.img), as JSON")
	c.logFlags()
	if err := c.parse(args, true); err != nil {
		return 0, err
	}
	view := ""
	if c.fs.NArg() > 0 {
		// Options may follow the view: cr show -i DIR ps --json.
		view = c.fs.Arg(0)
		if err := c.parse(c.fs.Args()[1:], false); err != nil {
			return 0, err
		}
	}
	if *dir == "" {
		return 0, &usageError{"show: -i DIR is required (see cr show -h)"}
	}
	if *file != "" {
		if view != "" {
			return 0, &usageError{"show: --file and a view exclude each other"}
		}
		d, err := image.DecodeFile(*dir, *file)
		if err != nil {
			return 0, err
		}
		return 0, image.WriteShowJSON(os.Stdout, d)
	}
	mk, ok := showViews[view]
	if view != "" && !ok {
		names := make([]string, 0, len(showViews))
		for n := range showViews {
			names = append(names, n)
		}
		sort.Strings(names)
		return 0, &usageError{fmt.Sprintf("show: unknown view %q (views: %s)", view, strings.Join(names, ", "))}
	}
	ck, err := files.Load(*dir)
	if err != nil {
		return 0, err
	}
	for _, p := range ck.Processes {
		if p.Task.Zombie {
			continue
		}
		if err := image.VerifyPages(*dir, p); err != nil {
			return 0, err
		}
	}
	if err := image.VerifyShmem(*dir, ck.Shmem); err != nil {
		return 0, err
	}
	if view == "" {
		if *js {
			return 0, image.WriteShowJSON(os.Stdout, ck)
		}
		files.WriteSummary(os.Stdout, ck)
		return 0, nil
	}
	rows, table := mk(ck)
	if *js {
		return 0, image.WriteShowJSON(os.Stdout, rows)
	}
	table(os.Stdout)
	return 0, nil
}

func newTable(w io.Writer, header string) *tabwriter.Writer {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	return tw
}

type psRow struct {
	Pid     int    `json:"pid"`
	Ppid    int    `json:"ppid"`
	Pgid    int    `json:"pgid"`
	Sid     int    `json:"sid"`
	State   string `json:"state"`
	Comm    string `json:"comm"`
	Threads []int  `json:"threads"`
}

func viewPs(c *image.Checkpoint) (any, func(io.Writer)) {
	rows := []psRow{}
	for _, p := range c.Processes {
		t := &p.Task
		r := psRow{Pid: t.Pid, Ppid: t.Ppid, Pgid: t.Pgid, Sid: t.Sid, State: "running", Comm: t.Comm, Threads: []int{}}
		switch {
		case t.Zombie:
			r.State = "zombie"
		case t.Stopped:
			r.State = "stopped"
		}
		for _, th := range p.Threads {
			r.Threads = append(r.Threads, th.Tid)
		}
		rows = append(rows, r)
	}
	return rows, func(w io.Writer) {
		tw := newTable(w, "PID\tPPID\tPGID\tSID\tSTATE\tCOMM\tTHREADS")
		for _, r := range rows {
			fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%s\t%s\t%s\n", r.Pid, r.Ppid, r.Pgid, r.Sid, r.State, r.Comm, joinInts(r.Threads))
		}
		tw.Flush()
	}
}

func joinInts(v []int) string {
	if len(v) == 0 {
		return "-"
	}
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, ",")
}

type fdRow struct {
	Pid      int      `json:"pid"`
	Fd       string   `json:"fd"` // a number, or "cwd" / "root"
	Kind     string   `json:"kind"`
	Target   string   `json:"target"` // path, or what the kind says of it (peer, pipe id, ...)
	Flags    string   `json:"flags"`
	Pos      int64    `json:"pos"`
	Cloexec  bool     `json:"cloexec,omitempty"`
	External string   `json:"external,omitempty"`
	FileID   int      `json:"file_id"`
	Locks    []string `json:"locks,omitempty"` // the file locks saved on its description (lockTexts)
}

func viewFds(c *image.Checkpoint) (any, func(io.Writer)) {
	byID := fileIndex(c)
	rows := []fdRow{}
	for _, p := range c.Processes {
		if p.Task.Zombie {
			continue
		}
		rows = append(rows,
			fdRow{Pid: p.Task.Pid, Fd: "cwd", Kind: "dir", Target: p.FS.Cwd.Path, FileID: -1},
			fdRow{Pid: p.Task.Pid, Fd: "root", Kind: "dir", Target: p.FS.Root.Path, FileID: -1})
		for _, fd := range p.Fds {
			f := byID[fd.FileID]
			if f == nil {
				continue
			}
			rows = append(rows, fdRow{Pid: p.Task.Pid, Fd: fmt.Sprint(fd.Fd), Kind: f.Type, Target: files.Describe(f),
				Flags: openFlags(f.Flags), Pos: f.Pos, Cloexec: fd.Cloexec, External: f.External, FileID: f.ID, Locks: lockTexts(f.Locks)})
		}
	}
	return rows, func(w io.Writer) {
		tw := newTable(w, "PID\tFD\tKIND\tFLAGS\tPOS\tTARGET")
		for _, r := range rows {
			fl := r.Flags
			if r.Cloexec {
				fl += "|O_CLOEXEC"
			}
			if fl == "" {
				fl = "-"
			}
			pos := fmt.Sprint(r.Pos)
			if r.FileID < 0 {
				pos = "-"
			}
			target := r.Target
			if r.External != "" {
				target += " (external " + r.External + ")"
			}
			target += locksSuffix(r.Locks)
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", r.Pid, r.Fd, r.Kind, fl, pos, target)
		}
		tw.Flush()
	}
}

func fileIndex(c *image.Checkpoint) map[int]*image.File {
	m := map[int]*image.File{}
	for i := range c.Files {
		m[c.Files[i].ID] = &c.Files[i]
	}
	return m
}

// lockTexts names the file locks saved on a description, one string each:
// "flock exclusive", "flock shared", "POSIX write bytes 10-29 (pid 42)",
// "OFD read" (the whole file unless a range is given; bytes N-EOF reach
// the end of the file however long it grows).
func lockTexts(locks []image.FileLock) []string {
	var out []string
	for _, l := range locks {
		if l.Kind == image.LockFlock {
			out = append(out, "flock "+map[string]string{"read": "shared", "write": "exclusive"}[l.Type])
			continue
		}
		s := map[string]string{image.LockPOSIX: "POSIX", image.LockOFD: "OFD"}[l.Kind] + " " + l.Type
		if l.Start != 0 || l.End != -1 {
			end := "EOF"
			if l.End >= 0 {
				end = fmt.Sprint(l.End)
			}
			s += fmt.Sprintf(" bytes %d-%s", l.Start, end)
		}
		if l.Kind == image.LockPOSIX && l.Pid != 0 {
			s += fmt.Sprintf(" (pid %d)", l.Pid)
		}
		out = append(out, s)
	}
	return out
}

// locksSuffix is how a table shows the locks after the target.
func locksSuffix(locks []string) string {
	if len(locks) == 0 {
		return ""
	}
	return " [locks: " + strings.Join(locks, ", ") + "]"
}

// openFlags names open(2) status flags (as F_GETFL gives them, x86-64).
// O_TMPFILE is named as one flag (__O_TMPFILE|O_DIRECTORY, as open(2)
// takes it).
func openFlags(fl uint32) string {
	var s []string
	switch fl & 3 {
	case 0:
		s = append(s, "O_RDONLY")
	case 1:
		s = append(s, "O_WRONLY")
	case 2:
		s = append(s, "O_RDWR")
	}
	names := []struct {
		bit  uint32
		name string
	}{{0o2000, "O_APPEND"}, {0o4000, "O_NONBLOCK"}, {0o10000, "O_DSYNC"}, {0o20000, "O_ASYNC"}, {0o40000, "O_DIRECT"},
		{0o100000, "O_LARGEFILE"}, {0o20200000, "O_TMPFILE"}, {0o200000, "O_DIRECTORY"}, {0o400000, "O_NOFOLLOW"}, {0o1000000, "O_NOATIME"},
		{0o4000000, "O_SYNC"}, {0o10000000, "O_PATH"}}
	rest := fl &^ 3
	for _, n := range names {
		if rest&n.bit == n.bit {
			s = append(s, n.name)
			rest &^= n.bit
		}
	}
	if rest != 0 {
		s = append(s, fmt.Sprintf("%#o", rest))
	}
	return strings.Join(s, "|")
}

type memRow struct {
	Pid        int      `json:"pid"`
	Start      uint64   `json:"start"`
	End        uint64   `json:"end"`
	Prot       string   `json:"prot"`
	Flags      []string `json:"flags,omitempty"`
	Pgoff      uint64   `json:"pgoff"`
	Name       string   `json:"name"`
	Pages      uint64   `json:"pages"`       // pages of the mapping
	SavedPages uint64   `json:"saved_pages"` // pages saved in this process's pages file
	InParent   uint64   `json:"in_parent_pages,omitempty"`
}

func vmaName(v *image.VMA) string {
	switch {
	case v.File != nil:
		return v.File.Path
	case v.Special != "":
		return "[" + v.Special + "]"
	case v.SysVShmid != nil:
		return fmt.Sprintf("SYSV shmid %d", *v.SysVShmid)
	case v.Shmem != 0:
		return fmt.Sprintf("shmem %d", v.Shmem)
	}
	return ""
}

func viewMems(c *image.Checkpoint) (any, func(io.Writer)) {
	rows := []memRow{}
	for _, p := range c.Processes {
		for i := range p.VMAs {
			v := &p.VMAs[i]
			r := memRow{Pid: p.Task.Pid, Start: v.Start, End: v.End, Prot: v.Prot, Flags: v.Flags, Pgoff: v.Pgoff,
				Name: vmaName(v), Pages: v.Len() / image.PageSize}
			for _, run := range p.PageMap {
				if v.Start <= run.Addr && run.Addr < v.End {
					if run.InParent {
						r.InParent += run.Pages
					} else {
						r.SavedPages += run.Pages
					}
				}
			}
			rows = append(rows, r)
		}
	}
	return rows, func(w io.Writer) {
		tw := newTable(w, "PID\tSTART\tEND\tPROT\tPAGES\tSAVED\tNAME")
		for _, r := range rows {
			saved := fmt.Sprint(r.SavedPages)
			if r.InParent > 0 {
				saved += fmt.Sprintf(" (+%d in parent)", r.InParent)
			}
			prot := r.Prot
			if len(r.Flags) > 0 {
				prot += " " + strings.Join(r.Flags, ",")
			}
			fmt.Fprintf(tw, "%d\t%012x\t%012x\t%s\t%d\t%s\t%s\n", r.Pid, r.Start, r.End, prot, r.Pages, saved, r.Name)
		}
		tw.Flush()
	}
}

type rssRow struct {
	Pid      int    `json:"pid"`
	Addr     uint64 `json:"addr"`
	Pages    uint64 `json:"pages"`
	Offset   uint64 `json:"offset,omitempty"` // in pages-PID.img
	InParent bool   `json:"in_parent,omitempty"`
	Name     string `json:"name"` // the mapping's
}

func viewRss(c *image.Checkpoint) (any, func(io.Writer)) {
	rows := []rssRow{}
	for _, p := range c.Processes {
		for _, run := range p.PageMap {
			r := rssRow{Pid: p.Task.Pid, Addr: run.Addr, Pages: run.Pages, Offset: run.Offset, InParent: run.InParent}
			i := sort.Search(len(p.VMAs), func(i int) bool { return p.VMAs[i].End > run.Addr })
			if i < len(p.VMAs) && p.VMAs[i].Start <= run.Addr {
				r.Name = vmaName(&p.VMAs[i])
			}
			rows = append(rows, r)
		}
	}
	return rows, func(w io.Writer) {
		tw := newTable(w, "PID\tADDR\tPAGES\tSTORED\tNAME")
		for _, r := range rows {
			where := fmt.Sprintf("%s@%#x", image.PagesFile(r.Pid), r.Offset)
			if r.InParent {
				where = "in the parent"
			}
			fmt.Fprintf(tw, "%d\t%012x\t%d\t%s\t%s\n", r.Pid, r.Addr, r.Pages, where, r.Name)
		}
		tw.Flush()
	}
}

type fileRow struct {
	ID       int      `json:"id"`
	Kind     string   `json:"kind"`
	Flags    string   `json:"flags"`
	Pos      int64    `json:"pos"`
	Target   string   `json:"target"`
	External string   `json:"external,omitempty"`
	Users    []string `json:"users"`           // pid:fd holding it
	Locks    []string `json:"locks,omitempty"` // the file locks saved on it (lockTexts)
}

func fileRows(c *image.Checkpoint, keep func(*image.File) bool) []fileRow {
	users := map[int][]string{}
	for _, p := range c.Processes {
		for _, fd := range p.Fds {
			users[fd.FileID] = append(users[fd.FileID], fmt.Sprintf("%d:%d", p.Task.Pid, fd.Fd))
		}
	}
	rows := []fileRow{}
	for i := range c.Files {
		f := &c.Files[i]
		if !keep(f) {
			continue
		}
		u := users[f.ID]
		if u == nil {
			u = []string{}
		}
		rows = append(rows, fileRow{ID: f.ID, Kind: f.Type, Flags: openFlags(f.Flags), Pos: f.Pos, Target: files.Describe(f),
			External: f.External, Users: u, Locks: lockTexts(f.Locks)})
	}
	return rows
}

func fileTable(rows []fileRow) func(io.Writer) {
	return func(w io.Writer) {
		tw := newTable(w, "ID\tKIND\tFLAGS\tPOS\tUSED BY (pid:fd)\tTARGET")
		for _, r := range rows {
			target := r.Target
			if r.External != "" {
				target += " (external " + r.External + ")"
			}
			target += locksSuffix(r.Locks)
			used := strings.Join(r.Users, ",")
			if used == "" {
				used = "-"
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\n", r.ID, r.Kind, r.Flags, r.Pos, used, target)
		}
		tw.Flush()
	}
}

func viewFiles(c *image.Checkpoint) (any, func(io.Writer)) {
	rows := fileRows(c, func(*image.File) bool { return true })
	return rows, fileTable(rows)
}

func viewSockets(c *image.Checkpoint) (any, func(io.Writer)) {
	rows := fileRows(c, func(f *image.File) bool {
		return f.Unix != nil || f.Inet != nil || strings.HasPrefix(f.Ident.Path, "socket:")
	})
	return rows, fileTable(rows)
}

type ipcRow struct {
	Kind string `json:"kind"` // shm, sem, msg
	ID   int    `json:"id"`
	Key  int32  `json:"key"`
	Mode uint32 `json:"mode"`
	UID  uint32 `json:"uid"`
	GID  uint32 `json:"gid"`
	What string `json:"what"`
}

func viewIPC(c *image.Checkpoint) (any, func(io.Writer)) {
	rows := []ipcRow{}
	if c.IPC != nil {
		for _, s := range c.IPC.Shm {
			what := fmt.Sprintf("%d bytes", s.Size)
			if s.Removed {
				what += ", marked for removal"
			}
			rows = append(rows, ipcRow{"shm", s.ID, s.Key, s.Mode, s.UID, s.GID, what})
		}
		for _, s := range c.IPC.Sem {
			rows = append(rows, ipcRow{"sem", s.ID, s.Key, s.Mode, s.UID, s.GID, fmt.Sprintf("values %v", s.Values)})
		}
		for _, q := range c.IPC.Msg {
			rows = append(rows, ipcRow{"msg", q.ID, q.Key, q.Mode, q.UID, q.GID, fmt.Sprintf("%d messages", len(q.Messages))})
		}
	}
	return rows, func(w io.Writer) {
		tw := newTable(w, "KIND\tID\tKEY\tMODE\tUID\tGID\tCONTENTS")
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%d\t%#08x\t%#o\t%d\t%d\t%s\n", r.Kind, r.ID, uint32(r.Key), r.Mode, r.UID, r.GID, r.What)
		}
		tw.Flush()
	}
}
