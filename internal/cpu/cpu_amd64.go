package cpu

func xgetbv0() (eax, edx uint32)
func cpuid(eax, ecx uint32) (a, b, c, d uint32)

// CPUID runs the CPUID instruction for leaf eax, sub-leaf ecx.
func CPUID(eax, ecx uint32) (a, b, c, d uint32) { return cpuid(eax, ecx) }

// XCR0 returns the enabled XSAVE feature mask.
func XCR0() uint64 {
	a, d := xgetbv0()
	return uint64(d)<<32 | uint64(a)
}

// XSaveSize returns the size of the XSAVE area for the enabled features.
func XSaveSize() int {
	_, b, _, _ := cpuid(0xd, 0)
	return int(b)
}
