package image

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/cr-tools/cr/internal/cpu"
)

// WriteJSON renders the whole checkpoint as indented JSON.
func WriteJSON(w io.Writer, c *Checkpoint) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(c)
}

// WriteSummary renders a human summary of the checkpoint, naming each
// open file description by its path (or link text) at the dump.
func WriteSummary(w io.Writer, c *Checkpoint) { WriteSummaryWith(w, c, nil) }

// WriteSummaryWith is WriteSummary with each open file description named
// by describe (nil: its path); pkg/files passes its kinds' names.
func WriteSummaryWith(w io.Writer, c *Checkpoint, describe func(*File) string) {
	if describe == nil {
		describe = func(f *File) string { return f.Ident.Path }
	}
	inv := &c.Inventory
	fmt.Fprintf(w, "image format %d.%d, written by cr %s at %s\n", inv.FormatMajor, inv.FormatMinor, inv.CRVersion, inv.DumpTime)
	fmt.Fprintf(w, "kernel %s %s (%s), cpu %s xfeatures %#x xsave %d bytes\n",
		inv.Kernel.Sysname, inv.Kernel.Release, inv.Kernel.Machine, inv.CPU.Arch, inv.CPU.XFeatures, inv.CPU.XSaveSize)
	writeCPU(w, &inv.CPU)
	files := map[int]*File{}
	for i := range c.Files {
		files[c.Files[i].ID] = &c.Files[i]
	}
	for _, p := range c.Processes {
		t := &p.Task
		if t.Zombie {
			fmt.Fprintf(w, "\nprocess %d (%s) ppid %d pgid %d sid %d: a zombie, wait status %#x\n",
				t.Pid, t.Comm, t.Ppid, t.Pgid, t.Sid, t.ExitStatus)
			continue
		}
		state := ""
		if t.Stopped {
			state = ", stopped"
		}
		fmt.Fprintf(w, "\nprocess %d (%s) ppid %d pgid %d sid %d uid %d gid %d, %d thread(s)%s\n",
			t.Pid, t.Comm, t.Ppid, t.Pgid, t.Sid, t.Creds.Uid[0], t.Creds.Gid[0], len(p.Threads), state)
		fmt.Fprintf(w, "  exe %s\n  cwd %s  root %s\n", p.MM.Exe.Path, p.FS.Cwd.Path, p.FS.Root.Path)
		for _, th := range p.Threads {
			sc := ""
			if th.Syscall != nil {
				sc = fmt.Sprintf(" (in syscall %d: %s)", th.Syscall.Nr, th.Syscall.Action)
			}
			fmt.Fprintf(w, "  thread %d rip %#x rsp %#x%s\n", th.Tid, th.Regs.Rip, th.Regs.Rsp, sc)
		}
		saved := map[int]uint64{}
		var total, inParent uint64
		for _, r := range p.PageMap {
			if r.InParent {
				inParent += r.Pages
				continue
			}
			for i := range p.VMAs {
				if p.VMAs[i].Start <= r.Addr && r.Addr < p.VMAs[i].End {
					saved[i] += r.Pages
				}
			}
			total += r.Pages
		}
		shared := ""
		if inParent > 0 {
			shared = fmt.Sprintf(", %d more shared with the parent (stored there)", inParent)
		}
		fmt.Fprintf(w, "  memory: %d vmas, %d pages saved (%s)%s\n", len(p.VMAs), total, size(total*PageSize), shared)
		for i, v := range p.VMAs {
			name := v.Special
			if v.File != nil {
				name = v.File.Path
			}
			if name != "" && v.Special != "" {
				name = "[" + name + "]"
			}
			fl := ""
			if len(v.Flags) > 0 {
				fl = " " + strings.Join(v.Flags, ",")
			}
			fmt.Fprintf(w, "    %012x-%012x %-3s%s %9s %6d saved  %s\n", v.Start, v.End, v.Prot, fl, size(v.Len()), saved[i], name)
		}
		fmt.Fprintf(w, "  fds: %d\n", len(p.Fds))
		for _, fd := range p.Fds {
			f := files[fd.FileID]
			if f == nil {
				continue
			}
			ce := ""
			if fd.Cloexec {
				ce = " cloexec"
			}
			if f.External != "" {
				ce += " external " + f.External
			}
			fmt.Fprintf(w, "    %3d %-3s %s flags %#o pos %d (file %d)%s\n", fd.Fd, f.Type, describe(f), f.Flags, f.Pos, f.ID, ce)
		}
	}
	writeSysV(w, c)
}

// writeSysV lists the SysV IPC objects and who attaches each segment.
func writeSysV(w io.Writer, c *Checkpoint) {
	if c.IPC.Empty() {
		return
	}
	fmt.Fprintf(w, "\nsysv ipc:\n")
	perm := func(p IPCPerm) string {
		return fmt.Sprintf("key %#08x id %d mode %#o uid %d gid %d cuid %d cgid %d", uint32(p.Key), p.ID, p.Mode, p.UID, p.GID, p.CUID, p.CGID)
	}
	for _, sh := range c.IPC.Shm {
		var saved uint64
		for _, r := range sh.Runs {
			saved += r.Pages
		}
		rm := ""
		if sh.Removed {
			rm = ", marked for removal"
		}
		fmt.Fprintf(w, "  shm %s: %s, %d pages saved%s\n", perm(sh.IPCPerm), size(sh.Size), saved, rm)
		for _, p := range c.Processes {
			for _, v := range p.VMAs {
				if v.SysVShmid != nil && *v.SysVShmid == sh.ID {
					fmt.Fprintf(w, "    attached by pid %d at %#x-%#x %s\n", p.Task.Pid, v.Start, v.End, v.Prot)
				}
			}
		}
	}
	for _, sm := range c.IPC.Sem {
		fmt.Fprintf(w, "  sem %s: values %v\n", perm(sm.IPCPerm), sm.Values)
	}
	for _, q := range c.IPC.Msg {
		var bytes int
		for _, m := range q.Messages {
			bytes += len(m.Data)
		}
		fmt.Fprintf(w, "  msg %s: %d messages, %d bytes (limit %d)\n", perm(q.IPCPerm), len(q.Messages), bytes, q.QBytes)
	}
}

// writeCPU names the dumping machine's XSAVE components and feature flags
// (images of format 1.1 and later; older ones only have the mask).
func writeCPU(w io.Writer, c *CPU) {
	if c.Vendor != "" {
		fmt.Fprintf(w, "cpu vendor %s\n", c.Vendor)
	}
	var comps []cpu.Component
	for _, x := range c.XSaveLayout {
		comps = append(comps, cpu.Component{Bit: x.Bit, Offset: x.Offset, Size: x.Size})
	}
	if len(c.XSaveLayout) > 0 {
		fmt.Fprintf(w, "xsave components (offset+size): %s\n", cpu.DescribeComponents(comps))
	} else {
		fmt.Fprintf(w, "xsave components: %s\n", cpu.ComponentNames(c.XFeatures))
	}
	if len(c.CPUID) > 0 {
		fmt.Fprintf(w, "cpu features: %s\n", strings.Join(cpu.FeatureNames(c.Leaves()), " "))
	}
}

func size(b uint64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.0f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}
