package restore

import (
	"encoding/binary"
	"fmt"
	"os"
	"slices"

	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/procfs"
	"golang.org/x/sys/unix"
)

// Capability numbers (linux/capability.h) used below.
const (
	capSetgid      = 6
	capSetpcap     = 8
	capSysResource = 24
)

// creds are the credentials of cr, and what the process it starts (the
// stub, exec'd from a memfd: no file capabilities, not set-user-ID) gets
// from them.
type creds struct {
	uid, gid   [3]int // real, effective, saved
	groups     []uint32
	securebits uint32
	own        capSets // cr's capability sets
	task       capSets // the sets the new process starts with
	root       bool    // the task gets root's capabilities at exec
	nnp        bool    // cr runs with no_new_privs, which the task inherits
}

// capSets holds the five capability sets of a task, bit i for capability i.
type capSets struct{ inh, prm, eff, bnd, amb uint64 }

// ownCreds reads cr's credentials and derives the new process's
// capabilities with the rules of execve(2) (capabilities(7),
// "Transformation of capabilities during execve()"; security/commoncap.c
// cap_bprm_creds_from_file): the inheritable and bounding sets are kept; a
// process whose real or effective uid is 0 (without SECBIT_NOROOT) gets
// permitted = effective = inheritable | bounding; any other gets its
// ambient set as permitted and effective.
func ownCreds() (*creds, error) {
	st, err := procfs.ReadStatus(os.Getpid())
	if err != nil {
		return nil, fmt.Errorf("read cr's own credentials: %w", err)
	}
	c := &creds{own: capSets{inh: st.Hex("CapInh"), prm: st.Hex("CapPrm"), eff: st.Hex("CapEff"), bnd: st.Hex("CapBnd"), amb: st.Hex("CapAmb")}}
	c.nnp = st.Int("NoNewPrivs") == 1
	c.uid[0], c.uid[1], c.uid[2] = unix.Getresuid()
	c.gid[0], c.gid[1], c.gid[2] = unix.Getresgid()
	if g, err := unix.Getgroups(); err == nil {
		for _, x := range g {
			c.groups = append(c.groups, uint32(x))
		}
	}
	if sb, err := unix.PrctlRetInt(unix.PR_GET_SECUREBITS, 0, 0, 0, 0); err == nil {
		c.securebits = uint32(sb)
	}
	c.root = (c.uid[0] == 0 || c.uid[1] == 0) && c.securebits&secbitNoroot == 0
	c.task = capSets{inh: c.own.inh, bnd: c.own.bnd}
	if c.root {
		c.task.prm = c.own.inh | c.own.bnd
		c.task.eff = c.task.prm
	} else {
		c.task.prm, c.task.eff, c.task.amb = c.own.amb, c.own.amb, c.own.amb
	}
	// exec clears SECBIT_KEEP_CAPS.
	c.securebits &^= secbitKeepCaps
	return c, nil
}

// has reports whether the new process has capability cp in effect.
func (c *creds) has(cp int) bool { return c.task.eff&(1<<cp) != 0 }

// where says where the new process's capabilities come from, for messages.
func (c *creds) where() string {
	if c.root {
		return fmt.Sprintf("cr runs as root: its bounding set %#x and inheritable set %#x", c.own.bnd, c.own.inh)
	}
	return fmt.Sprintf("cr runs as uid %d: only its ambient set %#x passes to the process it starts", c.uid[1], c.own.amb)
}

func sameIDs(a [4]uint32, b [3]int) bool {
	return int(a[0]) == b[0] && int(a[1]) == b[1] && int(a[2]) == b[2]
}

// uidChange reports whether the image's process runs as other uids than cr.
func (c *creds) uidChange(img *image.Creds) bool { return !sameIDs(img.Uid, c.uid) }

func (c *creds) groupsDiffer(img *image.Creds) bool { return !slices.Equal(c.groups, img.Groups) }

// setSecurebits reports whether the image's securebits other than
// SECBIT_KEEP_CAPS differ from what the new process has, so that they must
// be set with PR_SET_SECUREBITS (which needs CAP_SETPCAP). SECBIT_KEEP_CAPS
// alone is PR_SET_KEEPCAPS, which needs no capability.
func (c *creds) setSecurebits(img *image.Creds) bool {
	return img.Securebits&^secbitKeepCaps != c.securebits&^secbitKeepCaps
}

// checkCreds refuses an image whose credentials the process cr starts
// cannot take: a restore never grants more than the caller has. Each
// message names the set of the image that fails and the limit it fails
// against.
func checkCreds(img *image.Creds, c *creds) error {
	if !c.root {
		for _, u := range img.Uid[:3] {
			if int(u) != c.uid[1] && int(u) != c.uid[0] {
				return fmt.Errorf("the image's process ran as uid %d, cr runs as uid %d: only root may restore another user's process", img.Uid[1], c.uid[1])
			}
		}
		for _, g := range img.Gid[:3] {
			if int(g) != c.gid[0] && int(g) != c.gid[1] && int(g) != c.gid[2] && !c.has(capSetgid) {
				return fmt.Errorf("the image's process ran as gid %d, cr runs as gid %d and the process it starts lacks CAP_SETGID: only root may restore it", g, c.gid[1])
			}
		}
		have := map[uint32]bool{}
		for _, x := range c.groups {
			have[x] = true
		}
		for _, x := range img.Groups {
			if !have[x] && !c.has(capSetgid) {
				return fmt.Errorf("the image's process was in group %d, which cr is not in: only root may restore it", x)
			}
		}
		if c.groupsDiffer(img) && !c.has(capSetgid) {
			return fmt.Errorf("the image's supplementary groups %v differ from cr's %v; setting them needs CAP_SETGID, which the process cr starts lacks (%s)", img.Groups, c.groups, c.where())
		}
	}
	if x := img.CapEff &^ img.CapPrm; x != 0 {
		return fmt.Errorf("image is inconsistent: effective capabilities %#x are not in the permitted set %#x", x, img.CapPrm)
	}
	if x := img.CapAmb &^ (img.CapPrm & img.CapInh); x != 0 {
		return fmt.Errorf("image is inconsistent: ambient capabilities %#x are not both permitted and inheritable", x)
	}
	if x := img.CapBnd &^ c.task.bnd; x != 0 {
		return fmt.Errorf("the image's bounding set %#x has capabilities %#x that cr's bounding set %#x lacks (a bounding set can only shrink): run cr with a bounding set that has them", img.CapBnd, x, c.task.bnd)
	}
	if x := c.task.bnd &^ img.CapBnd; x != 0 && !c.has(capSetpcap) {
		return fmt.Errorf("the image's bounding set %#x lacks capabilities %#x that cr's bounding set %#x has; dropping them needs CAP_SETPCAP, which the process cr starts lacks (%s)", img.CapBnd, x, c.task.bnd, c.where())
	}
	if x := img.CapPrm &^ c.task.prm; x != 0 {
		return fmt.Errorf("the image's permitted set %#x has capabilities %#x that the process cr starts cannot have (%s)", img.CapPrm, x, c.where())
	}
	if x := img.CapInh &^ (c.task.inh | c.task.prm); x != 0 {
		return fmt.Errorf("the image's inheritable set %#x has capabilities %#x that are neither in cr's inheritable set %#x nor permitted to the process cr starts (%s)", img.CapInh, x, c.task.inh, c.where())
	}
	if c.setSecurebits(img) && !c.has(capSetpcap) {
		return fmt.Errorf("the image's securebits %#x differ from cr's %#x; setting them needs CAP_SETPCAP, which the process cr starts lacks (%s)", img.Securebits, c.securebits, c.where())
	}
	return nil
}

// restoreCreds drops to the image's credentials, changing only what
// differs from what the new process inherited (each change may need a
// capability the image's process does not need): bounding set, keep-caps
// (so that a uid change keeps the capabilities), groups, gids, uids, then
// the securebits, capabilities and ambient set. The securebits are set
// once the ids are in place and exactly as in the image: set before the
// uid change, SECBIT_KEEP_CAPS_LOCKED would forbid clearing the keep-caps
// bit the uid change needed (seen with setpriv --securebits
// +keep_caps_locked). The uid change clears the effective set, so it is
// raised to the permitted set first: PR_SET_SECUREBITS needs CAP_SETPCAP
// in effect (capabilities(7), security/commoncap.c cap_task_prctl).
func (r *restorer) restoreCreds() error {
	img := &r.proc.Task.Creds
	c, err := ownCreds()
	if err != nil {
		return err
	}
	if err := checkCreds(img, c); err != nil {
		return err
	}
	for cp := 0; cp <= capLastCap; cp++ {
		if (c.task.bnd&^img.CapBnd)&(1<<cp) != 0 {
			r.queue(fmt.Sprintf("drop capability %d from the bounding set", cp), unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, uintptr(cp))
		}
	}
	sb := c.securebits // the task's securebits as the steps below go
	if c.uidChange(img) && sb&secbitKeepCaps == 0 {
		r.queue("keep capabilities across the uid change", unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 1)
		sb |= secbitKeepCaps
	}
	if c.groupsDiffer(img) {
		b := make([]byte, 0, 4*len(img.Groups)+4)
		for _, g := range img.Groups {
			b = binary.LittleEndian.AppendUint32(b, g)
		}
		addr, err := r.stash(append(b, 0, 0, 0, 0))
		if err != nil {
			return err
		}
		r.queue("setgroups", unix.SYS_SETGROUPS, uintptr(len(img.Groups)), addr)
	}
	r.queue("setresgid", unix.SYS_SETRESGID, uintptr(img.Gid[0]), uintptr(img.Gid[1]), uintptr(img.Gid[2]))
	r.queue("setfsgid", unix.SYS_SETFSGID, uintptr(img.Gid[3]))
	r.queue("setresuid", unix.SYS_SETRESUID, uintptr(img.Uid[0]), uintptr(img.Uid[1]), uintptr(img.Uid[2]))
	r.queue("setfsuid", unix.SYS_SETFSUID, uintptr(img.Uid[3]))
	if c.setSecurebits(img) {
		if c.uidChange(img) {
			addr, err := r.stash(capData(c.task.prm, c.task.prm, c.task.inh))
			if err != nil {
				return err
			}
			r.queue("capset: raise the effective set for the securebits", unix.SYS_CAPSET, addr, addr+8)
		}
		r.queue(fmt.Sprintf("securebits %#x", img.Securebits), unix.SYS_PRCTL, unix.PR_SET_SECUREBITS, uintptr(img.Securebits))
		sb = img.Securebits
	}
	addr, err := r.stash(capData(img.CapEff, img.CapPrm, img.CapInh))
	if err != nil {
		return err
	}
	r.queue("capset", unix.SYS_CAPSET, addr, addr+8)
	for cp := 0; cp <= capLastCap; cp++ {
		if img.CapAmb&(1<<cp) != 0 {
			r.queue(fmt.Sprintf("raise ambient capability %d", cp), unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, uintptr(cp), 0, 0)
		}
	}
	if keep := img.Securebits & secbitKeepCaps; sb&secbitKeepCaps != keep {
		r.queue(fmt.Sprintf("keep-caps %d", keep>>4), unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, uintptr(keep>>4))
	}
	return nil
}

// capData is the argument block of capset(2): a struct
// __user_cap_header_struct (version 3, pid 0) and two
// __user_cap_data_struct (effective, permitted, inheritable; low then high
// 32 bits).
func capData(eff, prm, inh uint64) []byte {
	b := make([]byte, 0, 32)
	b = binary.LittleEndian.AppendUint32(b, unix.LINUX_CAPABILITY_VERSION_3)
	b = binary.LittleEndian.AppendUint32(b, 0)
	for _, half := range []int{0, 32} {
		for _, v := range []uint64{eff, prm, inh} {
			b = binary.LittleEndian.AppendUint32(b, uint32(v>>half))
		}
	}
	return b
}
