package image

import (
	"fmt"
	"sort"

	"github.com/cr-tools/cr/internal/cpu"
)

// XStateFrom records s (a thread's XSAVE state taken apart by
// cpu.Layout.Split) in the image's form.
func XStateFrom(s *cpu.XState) *XState {
	x := &XState{XStateBV: s.XStateBV, Legacy: s.Legacy}
	for bit, b := range s.Components {
		x.Components = append(x.Components, XStateComponent{Bit: bit, Data: b})
	}
	sort.Slice(x.Components, func(i, j int) bool { return x.Components[i].Bit < x.Components[j].Bit })
	return x
}

// CPU returns x as cpu.XState, for a dumping machine whose feature mask
// was xcr0 (inventory.cpu.xfeatures).
func (x *XState) CPU(xcr0 uint64) *cpu.XState {
	s := &cpu.XState{XCR0: xcr0, XStateBV: x.XStateBV, Legacy: x.Legacy, Components: map[uint][]byte{}}
	for _, c := range x.Components {
		s.Components[c.Bit] = c.Data
	}
	return s
}

// LayoutOf is the image form of a machine's XSAVE layout.
func LayoutOf(l *cpu.Layout) []XComponent {
	var cs []XComponent
	for _, c := range l.Components {
		cs = append(cs, XComponent{Bit: c.Bit, Offset: c.Offset, Size: c.Size})
	}
	return cs
}

// LeavesOf is the image form of CPUID leaves.
func LeavesOf(ls []cpu.Leaf) []CPUIDLeaf {
	var out []CPUIDLeaf
	for _, l := range ls {
		out = append(out, CPUIDLeaf{Leaf: l.Leaf, Subleaf: l.Sub, EAX: l.EAX, EBX: l.EBX, ECX: l.ECX, EDX: l.EDX})
	}
	return out
}

// Leaves returns the recorded CPUID leaves as cpu.Leaf.
func (c *CPU) Leaves() []cpu.Leaf {
	var out []cpu.Leaf
	for _, l := range c.CPUID {
		out = append(out, cpu.Leaf{Leaf: l.Leaf, Sub: l.Subleaf, EAX: l.EAX, EBX: l.EBX, ECX: l.ECX, EDX: l.EDX})
	}
	return out
}

// maxComponent bounds one component's bytes (AMX tile data, the largest
// today, is 8 KiB).
const maxComponent = 1 << 20

// checkXState says what is wrong with a thread's register state record
// ("" if nothing): a live thread has either a format 1.0 xsave area or an
// xstate whose legacy region is 512 bytes and whose components are
// extended ones (bit 2-63), each once, ascending, marked in xstate_bv,
// not empty and not oversized; every extended bit of xstate_bv has one.
func checkXState(t *Thread) string {
	x := t.XState
	if x == nil {
		if len(t.XSave) < cpu.ExtStart {
			return fmt.Sprintf("thread %d has no xstate (and no xsave area of at least %d bytes)", t.Tid, cpu.ExtStart)
		}
		return ""
	}
	if len(t.XSave) != 0 {
		return fmt.Sprintf("thread %d has both xsave and xstate", t.Tid)
	}
	if len(x.Legacy) != cpu.LegacySize {
		return fmt.Sprintf("thread %d: xstate legacy region of %d bytes, not %d", t.Tid, len(x.Legacy), cpu.LegacySize)
	}
	var seen uint64
	for i, c := range x.Components {
		switch {
		case c.Bit < 2 || c.Bit > 63:
			return fmt.Sprintf("thread %d: xstate component %d is not an extended component", t.Tid, c.Bit)
		case i > 0 && c.Bit <= x.Components[i-1].Bit:
			return fmt.Sprintf("thread %d: xstate components out of order at %d", t.Tid, c.Bit)
		case x.XStateBV&(1<<c.Bit) == 0:
			return fmt.Sprintf("thread %d: xstate component %d is not in xstate_bv %#x", t.Tid, c.Bit, x.XStateBV)
		case len(c.Data) == 0 || len(c.Data) > maxComponent:
			return fmt.Sprintf("thread %d: xstate component %d of %d bytes", t.Tid, c.Bit, len(c.Data))
		}
		seen |= 1 << c.Bit
	}
	if extra := x.XStateBV &^ 3 &^ seen; extra != 0 {
		return fmt.Sprintf("thread %d: xstate_bv %#x marks components %#x in use but holds no bytes for them", t.Tid, x.XStateBV, extra)
	}
	return ""
}
