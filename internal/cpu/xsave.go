package cpu

import (
	"encoding/binary"
	"fmt"
	"sort"
	"strings"
	"sync"
)

// Fixed parts of the standard (non-compacted) XSAVE area, Intel SDM vol. 1,
// 13.4: the legacy (FXSAVE) region and the XSAVE header. Every other state
// component sits where CPUID.(EAX=0DH,ECX=i).EBX says, which differs from
// CPU to CPU (AMD EPYC puts the AVX-512 opmask at 832, Intel at 1088).
const (
	LegacySize   = 512 // x87 and SSE state (FXSAVE layout)
	HeaderOffset = 512 // XSTATE_BV at 512, XCOMP_BV at 520
	HeaderSize   = 64
	ExtStart     = HeaderOffset + HeaderSize // 576: first extended component

	// SWReservedOffset is where the kernel puts XCR0 in a ptrace
	// NT_X86_XSTATE area: the first u64 of the software-reserved bytes
	// 464..511 of the legacy region (arch/x86/include/asm/user.h,
	// "struct user_xstateregs"; gdb's I386_LINUX_XSAVE_XCR0_OFFSET).
	SWReservedOffset = 464
)

// XSAVE state component numbers (Intel SDM vol. 1, 13.1; Linux
// arch/x86/include/asm/fpu/types.h, enum xfeature).
const (
	XFeatX87       = 0
	XFeatSSE       = 1
	XFeatAVX       = 2 // YMM_Hi128: upper halves of ymm0-15
	XFeatBndregs   = 3 // MPX bnd0-3
	XFeatBndcsr    = 4 // MPX BNDCFGU, BNDSTATUS
	XFeatOpmask    = 5 // AVX-512 k0-7
	XFeatZMMHi256  = 6 // AVX-512 upper halves of zmm0-15
	XFeatHi16ZMM   = 7 // AVX-512 zmm16-31
	XFeatPKRU      = 9
	XFeatTileCfg   = 17 // AMX TILECFG
	XFeatTileData  = 18 // AMX tile data (8 KiB)
	XFeatAPX       = 19 // APX r16-r31
	xfeatSupMask   = 1<<8 | 1<<10 | 1<<11 | 1<<12 | 1<<13 | 1<<14 | 1<<15 | 1<<16
	legacyFeatures = 1<<XFeatX87 | 1<<XFeatSSE
)

// InitPKRU is the PKRU value Linux gives every new process: access disabled
// for protection keys 1-15, key 0 open (arch/x86/mm/pkeys.c, init_pkru_value;
// tunable only through debugfs x86/init_pkru).
const InitPKRU = 0x55555554

var componentNames = map[uint]string{
	0: "x87", 1: "sse", 2: "avx", 3: "mpx bndregs", 4: "mpx bndcsr",
	5: "avx512 opmask", 6: "avx512 zmm_hi256", 7: "avx512 hi16_zmm", 8: "pt",
	9: "pkru", 10: "pasid", 11: "cet user", 12: "cet supervisor", 13: "hdc",
	14: "uintr", 15: "lbr", 16: "hwp", 17: "amx tilecfg", 18: "amx tiledata", 19: "apx",
}

// ComponentName is the name of XSAVE state component bit (Linux's names,
// lower case: "avx512 opmask"), or "component N".
func ComponentName(bit uint) string {
	if n, ok := componentNames[bit]; ok {
		return n
	}
	return fmt.Sprintf("component %d", bit)
}

// ComponentNames names every component of mask, lowest bit first, joined
// by ", ".
func ComponentNames(mask uint64) string {
	var s []string
	for bit := uint(0); bit < 64; bit++ {
		if mask&(1<<bit) != 0 {
			s = append(s, ComponentName(bit))
		}
	}
	return strings.Join(s, ", ")
}

// DescribeComponents lists the legacy components and cs with their offset
// and size, "x87 0+160, sse 160+256, avx 576+256, …".
func DescribeComponents(cs []Component) string {
	s := []string{"x87 0+160", "sse 160+256"}
	for _, c := range cs {
		s = append(s, fmt.Sprintf("%s %d+%d", ComponentName(c.Bit), c.Offset, c.Size))
	}
	return strings.Join(s, ", ")
}

// CPUIDFunc runs CPUID for a leaf and sub-leaf: the real instruction
// (CPUID) or a fixed table in tests.
type CPUIDFunc func(leaf, sub uint32) (eax, ebx, ecx, edx uint32)

// Component is one extended XSAVE state component in the standard format:
// its bit in XCR0, its offset and size in bytes (CPUID.(EAX=0DH,ECX=bit):
// EBX = offset, EAX = size).
type Component struct {
	Bit    uint
	Offset int
	Size   int
}

// Layout is a machine's standard-format XSAVE area, as ptrace
// PTRACE_GETREGSET/SETREGSET NT_X86_XSTATE use it: the enabled feature
// mask, the area's size in bytes, and where each extended component
// (bit 2 and up) is. x87 and SSE live in the fixed legacy region.
type Layout struct {
	XCR0       uint64
	Size       int
	Components []Component // ascending bit order
}

// Component returns the component with the given bit, or nil if the layout
// does not enable it.
func (l *Layout) Component(bit uint) *Component {
	for i := range l.Components {
		if l.Components[i].Bit == bit {
			return &l.Components[i]
		}
	}
	return nil
}

// LayoutOf builds the layout of the components enabled in xcr0 from CPUID
// leaf 0DH (Intel SDM vol. 1, 13.2). The size is the end of the last
// component (at least 576), as the kernel computes the ptrace area size
// (arch/x86/kernel/fpu/xstate.c, xstate_calculate_size). It fails when xcr0
// lacks x87 or SSE, names supervisor components, or CPUID reports a
// component that does not fit after the header.
func LayoutOf(cpuid CPUIDFunc, xcr0 uint64) (*Layout, error) {
	if xcr0&legacyFeatures != legacyFeatures {
		return nil, fmt.Errorf("xsave features %#x lack x87 or sse", xcr0)
	}
	if xcr0&xfeatSupMask != 0 {
		return nil, fmt.Errorf("xsave features %#x include supervisor components (%s)", xcr0, ComponentNames(xcr0&xfeatSupMask))
	}
	l := &Layout{XCR0: xcr0, Size: ExtStart}
	for bit := uint(2); bit < 64; bit++ {
		if xcr0&(1<<bit) == 0 {
			continue
		}
		size, off, _, _ := cpuid(0xd, uint32(bit))
		if size == 0 || off < ExtStart || off+size > 1<<20 {
			return nil, fmt.Errorf("cpuid leaf 0xd sub-leaf %d: %s at offset %d, %d bytes: not a standard-format component", bit, ComponentName(bit), off, size)
		}
		l.Components = append(l.Components, Component{Bit: bit, Offset: int(off), Size: int(size)})
		l.Size = max(l.Size, int(off+size))
	}
	sort.Slice(l.Components, func(i, j int) bool { return l.Components[i].Offset < l.Components[j].Offset })
	for i := 1; i < len(l.Components); i++ {
		a, b := l.Components[i-1], l.Components[i]
		if a.Offset+a.Size > b.Offset {
			return nil, fmt.Errorf("cpuid leaf 0xd: %s (%d+%d) overlaps %s (%d)", ComponentName(a.Bit), a.Offset, a.Size, ComponentName(b.Bit), b.Offset)
		}
	}
	sort.Slice(l.Components, func(i, j int) bool { return l.Components[i].Bit < l.Components[j].Bit })
	return l, nil
}

var host struct {
	once   sync.Once
	layout *Layout
	err    error
}

// HostLayout is this machine's XSAVE layout (XCR0 from XGETBV, offsets and
// sizes from CPUID leaf 0DH). Its size equals CPUID.(EAX=0DH,ECX=0).EBX,
// the size ptrace NT_X86_XSTATE needs; a mismatch is an error.
func HostLayout() (*Layout, error) {
	host.once.Do(func() {
		host.layout, host.err = LayoutOf(CPUID, XCR0())
		if host.err == nil && host.layout.Size != XSaveSize() {
			host.err = fmt.Errorf("xsave components end at %d bytes, cpuid leaf 0xd says the area is %d", host.layout.Size, XSaveSize())
		}
	})
	return host.layout, host.err
}

// XState is one thread's XSAVE state, independent of a machine's layout:
// the legacy region, the header's XSTATE_BV, and the bytes of every
// extended component whose XSTATE_BV bit is set. A component with its bit
// clear is in its initial state (SDM 13.6) and has no bytes here.
type XState struct {
	XCR0       uint64          // the feature mask of the machine it was saved on
	XStateBV   uint64          // XSTATE_BV: components not in their initial state
	Legacy     []byte          // LegacySize bytes: FXSAVE region (x87, MXCSR, xmm0-15)
	Components map[uint][]byte // extended component bit -> its bytes
}

// Split takes a ptrace NT_X86_XSTATE area of this layout apart. It fails on
// a wrong size, a compacted area, or a feature mask in the software bytes
// other than the layout's.
func (l *Layout) Split(area []byte) (*XState, error) {
	le := binary.LittleEndian
	if len(area) != l.Size {
		return nil, fmt.Errorf("xsave area of %d bytes, the layout of features %#x has %d", len(area), l.XCR0, l.Size)
	}
	if comp := le.Uint64(area[HeaderOffset+8:]); comp&(1<<63) != 0 {
		return nil, fmt.Errorf("xsave area in compacted format (xcomp_bv %#x)", comp)
	}
	if x := le.Uint64(area[SWReservedOffset:]); x != l.XCR0 {
		return nil, fmt.Errorf("xsave area for features %#x, the layout is for %#x", x, l.XCR0)
	}
	s := &XState{
		XCR0:       l.XCR0,
		XStateBV:   le.Uint64(area[HeaderOffset:]) & l.XCR0,
		Legacy:     append([]byte(nil), area[:LegacySize]...),
		Components: map[uint][]byte{},
	}
	for _, c := range l.Components {
		if s.XStateBV&(1<<c.Bit) != 0 {
			s.Components[c.Bit] = append([]byte(nil), area[c.Offset:c.Offset+c.Size]...)
		}
	}
	return s, nil
}

// Build lays s out in this layout, as PTRACE_SETREGSET NT_X86_XSTATE takes
// it: the legacy region, XCR0 in the software bytes, XSTATE_BV, and each
// component at this machine's offset. Components this layout does not
// enable are dropped (call Unmet first: only droppable ones may be);
// components s does not hold are left in their initial state, except PKRU,
// which gets InitPKRU when s comes from a machine without PKRU, as a new
// process here would have. A component whose size differs is an error.
func (l *Layout) Build(s *XState) ([]byte, error) {
	le := binary.LittleEndian
	if len(s.Legacy) != LegacySize {
		return nil, fmt.Errorf("xsave legacy region of %d bytes, want %d", len(s.Legacy), LegacySize)
	}
	area := make([]byte, l.Size)
	copy(area, s.Legacy)
	clear(area[SWReservedOffset:LegacySize])
	le.PutUint64(area[SWReservedOffset:], l.XCR0)
	bv := s.XStateBV & l.XCR0
	for _, c := range l.Components {
		b, ok := s.Components[c.Bit]
		switch {
		case ok && bv&(1<<c.Bit) != 0:
			if len(b) != c.Size {
				return nil, fmt.Errorf("xsave component %s of %d bytes, this machine's is %d", ComponentName(c.Bit), len(b), c.Size)
			}
			copy(area[c.Offset:], b)
		case bv&(1<<c.Bit) != 0:
			return nil, fmt.Errorf("xsave component %s is marked in use (xstate_bv %#x) but has no bytes", ComponentName(c.Bit), s.XStateBV)
		case c.Bit == XFeatPKRU && s.XCR0&(1<<XFeatPKRU) == 0:
			le.PutUint32(area[c.Offset:], InitPKRU)
			bv |= 1 << XFeatPKRU
		default:
			bv &^= 1 << c.Bit // initial state
		}
	}
	le.PutUint64(area[HeaderOffset:], bv)
	return area, nil
}

// Unmet returns the components of an image's feature mask xcr0 that this
// layout does not enable and that its threads' states cannot do without
// (0: the image can be restored here). Safe to drop:
//
//   - MPX (bndregs, bndcsr), always: with MPX not enabled the bnd*
//     instructions execute as NOPs, as on every CPU without MPX, and Linux
//     has not supported MPX since 5.6, so no task relies on its faults.
//   - PKRU, when every thread has it in its initial state (0) or at
//     InitPKRU: keys 1-15 then only deny access, and memory without keys
//     behaves alike.
//   - AMX tile config and data, when the process never asked for them:
//     xcompPerm (arch_prctl ARCH_GET_XCOMP_PERM, 0 = unknown) lacks tile
//     data and no thread has tile state.
//
// Everything else the image enabled must be enabled here.
func (l *Layout) Unmet(xcr0, xcompPerm uint64, states []*XState) uint64 {
	missing := xcr0 &^ l.XCR0
	missing &^= 1<<XFeatBndregs | 1<<XFeatBndcsr
	if missing&(1<<XFeatPKRU) != 0 {
		ok := true
		for _, s := range states {
			if b := s.Components[XFeatPKRU]; s.XStateBV&(1<<XFeatPKRU) != 0 && len(b) >= 4 {
				if v := binary.LittleEndian.Uint32(b); v != 0 && v != InitPKRU {
					ok = false
				}
			}
		}
		if ok {
			missing &^= 1 << XFeatPKRU
		}
	}
	const amx = 1<<XFeatTileCfg | 1<<XFeatTileData
	if missing&amx != 0 && xcompPerm != 0 && xcompPerm&(1<<XFeatTileData) == 0 {
		used := false
		for _, s := range states {
			used = used || s.XStateBV&amx != 0
		}
		if !used {
			missing &^= amx
		}
	}
	return missing
}

// SizeMismatch names the first component both layouts enable with other
// sizes ("" if none): component sizes are architectural, so this means the
// image is not for this architecture.
func (l *Layout) SizeMismatch(other *Layout) string {
	for _, c := range l.Components {
		if o := other.Component(c.Bit); o != nil && o.Size != c.Size {
			return fmt.Sprintf("%s is %d bytes here, %d in the image", ComponentName(c.Bit), c.Size, o.Size)
		}
	}
	return ""
}
