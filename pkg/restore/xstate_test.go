package restore_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/cr-tools/cr/internal/cpu"
	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/dump"
	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/restore"
	"github.com/stretchr/testify/require"
)

// TestRestoreXStateLayouts: the register state is stored per component
// and rebuilt in this machine's layout. On this machine, with every
// AVX-512 and x87 register checked by the spin_avx fixture after restore:
//   - the image as dumped restores;
//   - the same image as a format 1.0 image (raw XSAVE area) restores: old
//     images still restore on the machine that made them;
//   - the image as if dumped on a machine with MPX and PKRU (Intel, XCR0
//     0x2ff) restores when PKRU is at Linux's default (MPX and PKRU
//     dropped), and is refused, naming pkru, when a thread changed PKRU;
//   - an image whose CPU had a feature flag this one lacks is refused,
//     naming it; so is a format 1.0 image from another layout.
func TestRestoreXStateLayouts(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireAVX512(t)
	p := testutil.Start(t, testutil.BuildC(t, "spin_avx", "-mavx512f", "-mavx512bw", "-mavx2"))
	p.Check(t)
	src := filepath.Join(t.TempDir(), "img")
	_, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: src})
	require.NoError(t, err)
	p.Kill()
	host, err := cpu.HostLayout()
	require.NoError(t, err)
	le := binary.LittleEndian

	asFormat10 := func(c *image.Checkpoint) {
		c.Inventory.FormatMinor = 0
		c.Inventory.CPU = image.CPU{Arch: "x86_64", XFeatures: host.XCR0, XSaveSize: host.Size}
		for _, pr := range c.Processes {
			pr.Task.XCompPerm = 0
			for i := range pr.Threads {
				th := &pr.Threads[i]
				area, err := host.Build(th.XState.CPU(host.XCR0))
				require.NoError(t, err)
				th.XSave, th.XState = area, nil
			}
		}
	}
	// withMPXPKRU makes the image look as if the dumping machine had MPX
	// (bounds loaded in bnd0) and PKRU (set to pkru) enabled.
	withMPXPKRU := func(pkru uint32) func(c *image.Checkpoint) {
		return func(c *image.Checkpoint) {
			c.Inventory.CPU.XFeatures |= 1<<cpu.XFeatBndregs | 1<<cpu.XFeatBndcsr | 1<<cpu.XFeatPKRU
			for _, pr := range c.Processes {
				for i := range pr.Threads {
					x := pr.Threads[i].XState
					bnd := make([]byte, 64)
					le.PutUint64(bnd, 0x1000)
					le.PutUint64(bnd[8:], ^uint64(0x2000))
					pk := make([]byte, 8)
					le.PutUint32(pk, pkru)
					x.XStateBV |= 1<<cpu.XFeatBndregs | 1<<cpu.XFeatPKRU
					x.Components = append(x.Components, image.XStateComponent{Bit: cpu.XFeatBndregs, Data: bnd}, image.XStateComponent{Bit: cpu.XFeatPKRU, Data: pk})
					sortComponents(x)
				}
			}
		}
	}
	restores := map[string]func(c *image.Checkpoint){
		"as dumped":            func(*image.Checkpoint) {},
		"format 1.0":           asFormat10,
		"MPX and default PKRU": withMPXPKRU(cpu.InitPKRU),
	}
	if host.Component(cpu.XFeatPKRU) != nil || host.Component(cpu.XFeatBndregs) != nil {
		delete(restores, "MPX and default PKRU") // not a foreign layout here
	}
	for name, mutate := range restores {
		t.Run(name, func(t *testing.T) {
			res, err := restore.Run(context.Background(), restore.Options{Dir: rewrite(t, src, mutate)})
			require.NoError(t, err)
			q := testutil.Adopt(t, res.Pid, p.Dir)
			q.Info = p.Info
			for i := 0; i < 2; i++ {
				q.Check(t) // every zmm, k, x87 and general register as loaded
			}
			q.Kill()
		})
	}

	refusals := map[string]struct {
		mutate func(c *image.Checkpoint)
		want   string
	}{
		"CPU feature flag this CPU lacks": {func(c *image.Checkpoint) {
			for i := range c.Inventory.CPU.CPUID {
				if l := &c.Inventory.CPU.CPUID[i]; l.Leaf == 7 && l.Subleaf == 0 {
					l.EDX |= 1 << 3 // avx512_4fmaps: Xeon Phi only
				}
			}
		}, "avx512_4fmaps"},
		"PKRU changed by the task": {withMPXPKRU(0x55555550), "pkru"},
		"format 1.0 from another layout": {func(c *image.Checkpoint) {
			asFormat10(c)
			c.Inventory.CPU.XFeatures, c.Inventory.CPU.XSaveSize = 0x2ff, 2696
			for _, pr := range c.Processes {
				for i := range pr.Threads {
					x := make([]byte, 2696)
					le.PutUint64(x[cpu.SWReservedOffset:], 0x2ff)
					pr.Threads[i].XSave = x
				}
			}
		}, "restore it on that machine"},
		"XSAVE component of another size": {func(c *image.Checkpoint) {
			x := c.Processes[0].Threads[0].XState
			x.Components[0].Data = append(x.Components[0].Data, make([]byte, 64)...)
		}, "this machine's is"},
	}
	if host.Component(cpu.XFeatPKRU) != nil {
		delete(refusals, "PKRU changed by the task")
	}
	for name, c := range refusals {
		t.Run(name, func(t *testing.T) {
			_, err := restore.Run(context.Background(), restore.Options{Dir: rewrite(t, src, c.mutate)})
			require.ErrorIs(t, err, restore.ErrCPUMismatch)
			require.ErrorContains(t, err, c.want)
			t.Log(err)
			require.NoDirExists(t, fmt.Sprintf("/proc/%d", p.Pid), "nothing is left running")
		})
	}
}

func sortComponents(x *image.XState) {
	cs := x.Components
	for i := 1; i < len(cs); i++ {
		for j := i; j > 0 && cs[j].Bit < cs[j-1].Bit; j-- {
			cs[j], cs[j-1] = cs[j-1], cs[j]
		}
	}
}
