package cpu

import (
	"sort"
	"sync"
)

// Leaf is the result of one CPUID leaf and sub-leaf.
type Leaf struct {
	Leaf, Sub          uint32
	EAX, EBX, ECX, EDX uint32
}

// FeatureLeaves are the CPUID leaves whose feature flags cr records at dump
// and compares at restore: leaf 1 (ECX, EDX), leaf 7 sub-leaves 0 (EBX,
// ECX, EDX) and 1 (EAX), leaf 0DH sub-leaf 1 (EAX: xsaveopt, xsavec…),
// leaf 80000001H (ECX, EDX).
var FeatureLeaves = [][2]uint32{{1, 0}, {7, 0}, {7, 1}, {0xd, 1}, {0x80000001, 0}}

// ReadLeaves runs CPUID for every leaf of FeatureLeaves; a leaf above the
// CPU's maximum (CPUID 0 or 80000000H, EAX) reads as zeros, as does leaf 7
// sub-leaf 1 when leaf 7 sub-leaf 0 says it has none.
func ReadLeaves(cpuid CPUIDFunc) []Leaf {
	maxStd, _, _, _ := cpuid(0, 0)
	maxExt, _, _, _ := cpuid(0x80000000, 0)
	var max7 uint32
	if maxStd >= 7 {
		max7, _, _, _ = cpuid(7, 0)
	}
	var ls []Leaf
	for _, k := range FeatureLeaves {
		l := Leaf{Leaf: k[0], Sub: k[1]}
		ok := k[0] <= maxStd
		if k[0] >= 0x80000000 {
			ok = k[0] <= maxExt
		}
		if k[0] == 7 && k[1] > max7 {
			ok = false
		}
		if ok {
			l.EAX, l.EBX, l.ECX, l.EDX = cpuid(k[0], k[1])
		}
		ls = append(ls, l)
	}
	return ls
}

// Vendor is the CPU vendor string of CPUID leaf 0 ("GenuineIntel",
// "AuthenticAMD").
func Vendor(cpuid CPUIDFunc) string {
	_, b, c, d := cpuid(0, 0)
	var s [12]byte
	for i := 0; i < 4; i++ {
		s[i], s[4+i], s[8+i] = byte(b>>(8*i)), byte(d>>(8*i)), byte(c>>(8*i))
	}
	return string(s[:])
}

// feature is one CPUID feature flag: where it is, and Linux's
// /proc/cpuinfo name for it.
type feature struct {
	leaf, sub uint32
	reg       byte // 'a', 'b', 'c', 'd'
	bit       uint
	name      string
}

// features is the subset of CPUID flags that user code may have chosen
// code paths by (glibc's ifuncs and its dynamic linker pick AVX2, AVX-512,
// XSAVEC… routines once, at start-up): instruction-set extensions whose
// instructions fault (#UD) on a CPU without them. Left out: flags that
// only describe the system or performance (hypervisor, x2apic, erms, fsrm,
// tsc_deadline…), CET shadow stacks (cr does not carry their state),
// prefetch hints (they execute as NOPs), MPX (its
// instructions are NOPs when disabled), and PKU/OSPKE, which are covered
// by the PKRU component rule (Layout.Unmet). The names are Linux's.
var features = []feature{
	{1, 0, 'c', 0, "pni"}, {1, 0, 'c', 1, "pclmulqdq"}, {1, 0, 'c', 9, "ssse3"},
	{1, 0, 'c', 12, "fma"}, {1, 0, 'c', 13, "cx16"}, {1, 0, 'c', 19, "sse4_1"},
	{1, 0, 'c', 20, "sse4_2"}, {1, 0, 'c', 22, "movbe"}, {1, 0, 'c', 23, "popcnt"},
	{1, 0, 'c', 25, "aes"}, {1, 0, 'c', 26, "xsave"}, {1, 0, 'c', 28, "avx"},
	{1, 0, 'c', 29, "f16c"}, {1, 0, 'c', 30, "rdrand"},
	{1, 0, 'd', 0, "fpu"}, {1, 0, 'd', 4, "tsc"}, {1, 0, 'd', 8, "cx8"},
	{1, 0, 'd', 15, "cmov"}, {1, 0, 'd', 19, "clflush"}, {1, 0, 'd', 23, "mmx"},
	{1, 0, 'd', 24, "fxsr"}, {1, 0, 'd', 25, "sse"}, {1, 0, 'd', 26, "sse2"},

	{7, 0, 'b', 0, "fsgsbase"}, {7, 0, 'b', 3, "bmi1"}, {7, 0, 'b', 4, "hle"},
	{7, 0, 'b', 5, "avx2"}, {7, 0, 'b', 8, "bmi2"}, {7, 0, 'b', 11, "rtm"},
	{7, 0, 'b', 16, "avx512f"}, {7, 0, 'b', 17, "avx512dq"}, {7, 0, 'b', 18, "rdseed"},
	{7, 0, 'b', 19, "adx"}, {7, 0, 'b', 21, "avx512ifma"}, {7, 0, 'b', 23, "clflushopt"},
	{7, 0, 'b', 24, "clwb"}, {7, 0, 'b', 26, "avx512pf"}, {7, 0, 'b', 27, "avx512er"},
	{7, 0, 'b', 28, "avx512cd"}, {7, 0, 'b', 29, "sha_ni"}, {7, 0, 'b', 30, "avx512bw"},
	{7, 0, 'b', 31, "avx512vl"},
	{7, 0, 'c', 1, "avx512vbmi"}, {7, 0, 'c', 5, "waitpkg"}, {7, 0, 'c', 6, "avx512_vbmi2"},
	{7, 0, 'c', 8, "gfni"}, {7, 0, 'c', 9, "vaes"},
	{7, 0, 'c', 10, "vpclmulqdq"}, {7, 0, 'c', 11, "avx512_vnni"}, {7, 0, 'c', 12, "avx512_bitalg"},
	{7, 0, 'c', 14, "avx512_vpopcntdq"}, {7, 0, 'c', 22, "rdpid"}, {7, 0, 'c', 25, "cldemote"},
	{7, 0, 'c', 27, "movdiri"}, {7, 0, 'c', 28, "movdir64b"},
	{7, 0, 'd', 2, "avx512_4vnniw"}, {7, 0, 'd', 3, "avx512_4fmaps"}, {7, 0, 'd', 8, "avx512_vp2intersect"},
	{7, 0, 'd', 14, "serialize"}, {7, 0, 'd', 16, "tsxldtrk"}, {7, 0, 'd', 22, "amx_bf16"},
	{7, 0, 'd', 23, "avx512_fp16"}, {7, 0, 'd', 24, "amx_tile"}, {7, 0, 'd', 25, "amx_int8"},
	{7, 1, 'a', 4, "avx_vnni"}, {7, 1, 'a', 5, "avx512_bf16"}, {7, 1, 'a', 7, "cmpccxadd"},
	{7, 1, 'a', 21, "amx_fp16"}, {7, 1, 'a', 23, "avx_ifma"},

	{0xd, 1, 'a', 0, "xsaveopt"}, {0xd, 1, 'a', 1, "xsavec"}, {0xd, 1, 'a', 2, "xgetbv1"},

	{0x80000001, 0, 'c', 0, "lahf_lm"}, {0x80000001, 0, 'c', 5, "abm"}, {0x80000001, 0, 'c', 6, "sse4a"},
	{0x80000001, 0, 'c', 11, "xop"}, {0x80000001, 0, 'c', 16, "fma4"}, {0x80000001, 0, 'c', 21, "tbm"},
	{0x80000001, 0, 'd', 11, "syscall"}, {0x80000001, 0, 'd', 27, "rdtscp"}, {0x80000001, 0, 'd', 29, "lm"},
}

func (f *feature) in(ls []Leaf) bool {
	for _, l := range ls {
		if l.Leaf != f.leaf || l.Sub != f.sub {
			continue
		}
		r := map[byte]uint32{'a': l.EAX, 'b': l.EBX, 'c': l.ECX, 'd': l.EDX}[f.reg]
		return r&(1<<f.bit) != 0
	}
	return false
}

// FeatureNames lists the flags of the compared subset that leaves have,
// in the order of the leaves and bits.
func FeatureNames(ls []Leaf) []string {
	var names []string
	for i := range features {
		if features[i].in(ls) {
			names = append(names, features[i].name)
		}
	}
	return names
}

// MissingFeatures lists, sorted by name, the flags of the compared subset
// that image has and host lacks.
func MissingFeatures(image, host []Leaf) []string {
	var names []string
	for i := range features {
		if features[i].in(image) && !features[i].in(host) {
			names = append(names, features[i].name)
		}
	}
	sort.Strings(names)
	return names
}

// HostLeaves is ReadLeaves of this CPU.
func HostLeaves() []Leaf {
	hostLeaves.once.Do(func() { hostLeaves.l = ReadLeaves(CPUID) })
	return append([]Leaf(nil), hostLeaves.l...)
}

// hostLeaves caches HostLeaves: CPUID traps to the hypervisor in a VM
// (~30 µs a call here), and the leaves do not change while cr runs.
var hostLeaves struct {
	once sync.Once
	l    []Leaf
}
