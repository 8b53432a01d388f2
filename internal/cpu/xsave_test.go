package cpu

import (
	"bytes"
	"encoding/binary"
	"math/rand"
	"reflect"
	"strings"
	"testing"
)

// table is a fixed CPUID table: (leaf, sub-leaf) -> EAX, EBX, ECX, EDX.
type table map[[2]uint32][4]uint32

func (t table) cpuid(leaf, sub uint32) (a, b, c, d uint32) {
	r := t[[2]uint32{leaf, sub}]
	return r[0], r[1], r[2], r[3]
}

// withFeatures adds the named flags (Linux names, from the compared
// subset) to t's feature leaves.
func (t table) withFeatures(names ...string) table {
	for _, n := range names {
		found := false
		for _, f := range features {
			if f.name != n {
				continue
			}
			k := [2]uint32{f.leaf, f.sub}
			r := t[k]
			r[map[byte]int{'a': 0, 'b': 1, 'c': 2, 'd': 3}[f.reg]] |= 1 << f.bit
			t[k] = r
			found = true
		}
		if !found {
			panic("no feature " + n)
		}
	}
	return t
}

// Intel Xeon with MPX, AVX-512 and PKRU (Skylake-SP and later): XCR0 0x2ff,
// XSAVE area 2696 bytes (Intel SDM vol. 1, table 13-1 offsets as CPUID
// leaf 0DH reports them there).
func intelTable() table {
	return table{
		{0, 0}:          {0x1b, 0x756e6547, 0x6c65746e, 0x49656e69}, // GenuineIntel
		{0x80000000, 0}: {0x80000008},
		{0xd, 0}:        {0x2ff, 2696, 2696, 0},
		{0xd, 1}:        {0xf, 0, 0, 0},
		{0xd, 2}:        {256, 576, 0, 0},  // AVX
		{0xd, 3}:        {64, 960, 0, 0},   // MPX bndregs
		{0xd, 4}:        {64, 1024, 0, 0},  // MPX bndcsr
		{0xd, 5}:        {64, 1088, 0, 0},  // opmask
		{0xd, 6}:        {512, 1152, 0, 0}, // ZMM_Hi256
		{0xd, 7}:        {1024, 1664, 0, 0},
		{0xd, 8}:        {128, 0, 1, 0}, // PT, supervisor
		{0xd, 9}:        {8, 2688, 0, 0},
		{7, 0}:          {0},
	}.withFeatures("pni", "ssse3", "fma", "sse4_1", "sse4_2", "popcnt", "aes", "xsave", "avx", "f16c",
		"fpu", "cmov", "mmx", "fxsr", "sse", "sse2", "bmi1", "avx2", "bmi2", "avx512f", "avx512dq",
		"avx512cd", "avx512bw", "avx512vl", "avx512_fp16", "xsaveopt", "xsavec", "lahf_lm", "abm", "lm")
}

// AMD EPYC (Zen 4, as a guest): XCR0 0xe7, no MPX, no PKRU, XSAVE area
// 2432 bytes with the AVX-512 components right after AVX.
func amdTable() table {
	return table{
		{0, 0}:          {0x10, 0x68747541, 0x444d4163, 0x69746e65}, // AuthenticAMD
		{0x80000000, 0}: {0x80000021},
		{0xd, 0}:        {0xe7, 2432, 2432, 0},
		{0xd, 1}:        {0xf, 0, 0, 0},
		{0xd, 2}:        {256, 576, 0, 0},
		{0xd, 5}:        {64, 832, 0, 0},
		{0xd, 6}:        {512, 896, 0, 0},
		{0xd, 7}:        {1024, 1408, 0, 0},
		{7, 0}:          {1},
	}.withFeatures("pni", "ssse3", "fma", "sse4_1", "sse4_2", "popcnt", "aes", "xsave", "avx", "f16c",
		"fpu", "cmov", "mmx", "fxsr", "sse", "sse2", "bmi1", "avx2", "bmi2", "avx512f", "avx512dq",
		"avx512cd", "avx512bw", "avx512vl", "avx512_bf16", "xsaveopt", "xsavec", "lahf_lm", "abm", "sse4a", "lm")
}

func mustLayout(t *testing.T, tb table) *Layout {
	t.Helper()
	a, _, _, _ := tb.cpuid(0xd, 0)
	l, err := LayoutOf(tb.cpuid, uint64(a))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestLayouts: offsets and sizes of the two reference machines.
func TestLayouts(t *testing.T) {
	intel, amd := mustLayout(t, intelTable()), mustLayout(t, amdTable())
	if intel.Size != 2696 || amd.Size != 2432 {
		t.Errorf("sizes %d, %d; want 2696, 2432", intel.Size, amd.Size)
	}
	want := map[*Layout][]Component{
		intel: {{2, 576, 256}, {3, 960, 64}, {4, 1024, 64}, {5, 1088, 64}, {6, 1152, 512}, {7, 1664, 1024}, {9, 2688, 8}},
		amd:   {{2, 576, 256}, {5, 832, 64}, {6, 896, 512}, {7, 1408, 1024}},
	}
	for l, w := range want {
		if !reflect.DeepEqual(l.Components, w) {
			t.Errorf("layout %#x: %v, want %v", l.XCR0, l.Components, w)
		}
	}
	if s := intel.SizeMismatch(amd); s != "" {
		t.Errorf("size mismatch between Intel and AMD: %s", s)
	}
	if _, err := LayoutOf(intelTable().cpuid, 0x1ff); err == nil || !strings.Contains(err.Error(), "supervisor") {
		t.Errorf("layout with PT: %v", err)
	}
	if _, err := LayoutOf(amdTable().cpuid, 0x2ff); err == nil {
		t.Errorf("AMD table with MPX: no error")
	}
}

// area makes a ptrace-style XSAVE area of layout l with every component of
// bv holding random bytes, and PKRU = pkru.
func area(r *rand.Rand, l *Layout, bv uint64, pkru uint32) []byte {
	le := binary.LittleEndian
	a := make([]byte, l.Size)
	r.Read(a[:SWReservedOffset])
	le.PutUint64(a[SWReservedOffset:], l.XCR0)
	le.PutUint64(a[HeaderOffset:], bv)
	for _, c := range l.Components {
		if bv&(1<<c.Bit) != 0 {
			r.Read(a[c.Offset : c.Offset+c.Size])
		}
	}
	if c := l.Component(XFeatPKRU); c != nil {
		clear(a[c.Offset : c.Offset+c.Size])
		le.PutUint32(a[c.Offset:], pkru)
	}
	return a
}

func at(l *Layout, a []byte, bit uint) []byte {
	c := l.Component(bit)
	return a[c.Offset : c.Offset+c.Size]
}

// TestConvertIntelAMD: an Intel area goes to AMD's layout and back, and an
// AMD area to Intel's and back; every register survives at the other
// machine's offsets, MPX is dropped, PKRU comes back at its default.
func TestConvertIntelAMD(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	intel, amd := mustLayout(t, intelTable()), mustLayout(t, amdTable())
	le := binary.LittleEndian

	src := area(r, intel, 0x2ff, InitPKRU)
	s, err := intel.Split(src)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.Components[XFeatOpmask], src[1088:1152]) || !bytes.Equal(s.Components[XFeatHi16ZMM], src[1664:2688]) {
		t.Fatal("split took the components from the wrong offsets")
	}
	if m := amd.Unmet(s.XCR0, 0, []*XState{s}); m != 0 {
		t.Fatalf("Intel image with default PKRU on AMD: unmet %s", ComponentNames(m))
	}
	onAMD, err := amd.Build(s)
	if err != nil {
		t.Fatal(err)
	}
	if len(onAMD) != 2432 || le.Uint64(onAMD[SWReservedOffset:]) != 0xe7 || le.Uint64(onAMD[HeaderOffset:]) != 0xe7 {
		t.Fatalf("AMD area: %d bytes, xcr0 %#x, xstate_bv %#x", len(onAMD), le.Uint64(onAMD[SWReservedOffset:]), le.Uint64(onAMD[HeaderOffset:]))
	}
	if !bytes.Equal(onAMD[:SWReservedOffset], src[:SWReservedOffset]) {
		t.Error("legacy region changed")
	}
	for _, c := range []struct {
		bit          uint
		intel, amdAt int
		size         int
	}{{2, 576, 576, 256}, {5, 1088, 832, 64}, {6, 1152, 896, 512}, {7, 1664, 1408, 1024}} {
		if !bytes.Equal(onAMD[c.amdAt:c.amdAt+c.size], src[c.intel:c.intel+c.size]) {
			t.Errorf("%s not at AMD offset %d", ComponentName(c.bit), c.amdAt)
		}
	}

	// And back: MPX in its initial state, PKRU at Linux's default.
	s2, err := amd.Split(onAMD)
	if err != nil {
		t.Fatal(err)
	}
	if m := intel.Unmet(s2.XCR0, 0, []*XState{s2}); m != 0 {
		t.Fatalf("AMD image on Intel: unmet %s", ComponentNames(m))
	}
	back, err := intel.Build(s2)
	if err != nil {
		t.Fatal(err)
	}
	if bv := le.Uint64(back[HeaderOffset:]); bv != 0x2e7 {
		t.Errorf("xstate_bv back on Intel %#x, want 0x2e7 (MPX initial, PKRU set)", bv)
	}
	if v := le.Uint32(at(intel, back, XFeatPKRU)); v != InitPKRU {
		t.Errorf("PKRU %#x, want %#x", v, InitPKRU)
	}
	for _, bit := range []uint{2, 5, 6, 7} {
		if !bytes.Equal(at(intel, back, bit), at(intel, src, bit)) {
			t.Errorf("%s changed on the round trip", ComponentName(bit))
		}
	}
	if !bytes.Equal(back[:SWReservedOffset], src[:SWReservedOffset]) || !bytes.Equal(at(intel, back, 3), make([]byte, 64)) {
		t.Error("legacy region changed, or MPX not in its initial state")
	}

	// AMD -> Intel -> AMD is exact.
	a0 := area(r, amd, 0xe7, 0)
	sa, _ := amd.Split(a0)
	mid, err := intel.Build(sa)
	if err != nil {
		t.Fatal(err)
	}
	sm, _ := intel.Split(mid)
	a1, err := amd.Build(sm)
	if err != nil || !bytes.Equal(a0, a1) {
		t.Errorf("AMD -> Intel -> AMD changed the area (%v)", err)
	}

	// Components in their initial state carry no bytes and stay initial.
	a2 := area(r, intel, 0x2ff&^(1<<XFeatHi16ZMM|1<<XFeatZMMHi256), InitPKRU)
	s3, _ := intel.Split(a2)
	if _, ok := s3.Components[XFeatHi16ZMM]; ok {
		t.Error("initial-state component kept bytes")
	}
	b3, _ := amd.Build(s3)
	if bv := le.Uint64(b3[HeaderOffset:]); bv != 0x27 || !bytes.Equal(at(amd, b3, XFeatHi16ZMM), make([]byte, 1024)) {
		t.Errorf("xstate_bv %#x on AMD, want 0x27 and zeros", bv)
	}
}

// TestUnmet: what a machine must have for an image.
func TestUnmet(t *testing.T) {
	r := rand.New(rand.NewSource(2))
	intel, amd := mustLayout(t, intelTable()), mustLayout(t, amdTable())
	mk := func(l *Layout, bv uint64, pkru uint32) *XState {
		s, err := l.Split(area(r, l, bv, pkru))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	def, zero, custom := mk(intel, 0x2ff, InitPKRU), mk(intel, 0x2ff, 0), mk(intel, 0x2ff, 0x55555550)
	if m := amd.Unmet(0x2ff, 0, []*XState{def, zero}); m != 0 {
		t.Errorf("PKRU at default or 0: unmet %s", ComponentNames(m))
	}
	if m := amd.Unmet(0x2ff, 0, []*XState{def, custom}); m != 1<<XFeatPKRU {
		t.Errorf("a thread with PKRU %#x: unmet %#x, want pkru", 0x55555550, m)
	}
	if _, err := amd.Build(custom); err != nil {
		t.Error(err)
	}
	// AVX-512 image on a machine without AVX-512.
	avx := &Layout{XCR0: 7, Size: 832, Components: []Component{{2, 576, 256}}}
	if m := avx.Unmet(0xe7, 0, nil); m != 0xe0 || ComponentNames(m) != "avx512 opmask, avx512 zmm_hi256, avx512 hi16_zmm" {
		t.Errorf("AVX-512 image on AVX2 machine: unmet %#x (%s)", m, ComponentNames(m))
	}
	// AMX: droppable only when the process never asked for it.
	const amx = 1<<XFeatTileCfg | 1<<XFeatTileData
	idle := &XState{XStateBV: 0x2e7}
	used := &XState{XStateBV: 0x2e7 | amx}
	for _, c := range []struct {
		perm uint64
		s    *XState
		want uint64
	}{{0x2e7, idle, 0}, {0x2e7 | amx, idle, amx}, {0x2e7, used, amx}, {0, idle, amx}} {
		if m := amd.Unmet(0x602e7, c.perm, []*XState{c.s}); m != c.want {
			t.Errorf("AMX perm %#x, xstate_bv %#x: unmet %#x, want %#x", c.perm, c.s.XStateBV, m, c.want)
		}
	}
}

// TestMissingFeatures: an Intel image on AMD names what AMD lacks.
func TestMissingFeatures(t *testing.T) {
	in, am := ReadLeaves(intelTable().cpuid), ReadLeaves(amdTable().cpuid)
	if got := MissingFeatures(in, am); !reflect.DeepEqual(got, []string{"avx512_fp16"}) {
		t.Errorf("Intel image on AMD lacks %v", got)
	}
	if got := MissingFeatures(am, in); !reflect.DeepEqual(got, []string{"avx512_bf16", "sse4a"}) {
		t.Errorf("AMD image on Intel lacks %v", got)
	}
	if got := MissingFeatures(in, in); got != nil {
		t.Errorf("same CPU lacks %v", got)
	}
	if Vendor(intelTable().cpuid) != "GenuineIntel" || Vendor(amdTable().cpuid) != "AuthenticAMD" {
		t.Errorf("vendors %q %q", Vendor(intelTable().cpuid), Vendor(amdTable().cpuid))
	}
}

// TestHostLayout: this machine's layout agrees with CPUID's total size and
// has the standard fixed components.
func TestHostLayout(t *testing.T) {
	l, err := HostLayout()
	if err != nil {
		t.Fatal(err)
	}
	if c := l.Component(XFeatAVX); c == nil || c.Offset != 576 || c.Size != 256 {
		t.Errorf("AVX component %+v", c)
	}
	names := FeatureNames(HostLeaves())
	if !strings.Contains(" "+strings.Join(names, " ")+" ", " sse2 ") {
		t.Errorf("host features %v lack sse2", names)
	}
	t.Logf("%s: XCR0 %#x, %d bytes, %v; features %v", Vendor(CPUID), l.XCR0, l.Size, l.Components, names)
}
