// Package cpu tells which XSAVE state components this machine's kernel
// enables, so that restore can refuse an image that uses others before
// anything is created (Intel SDM vol. 1, 13.2 and 13.3: XCR0 through
// XGETBV; CPUID leaf 0DH, sub-leaf 0, EBX: the XSAVE area size for the
// components enabled in XCR0).
package cpu

func xgetbv0() (eax, edx uint32)
func cpuid(eax, ecx uint32) (a, b, c, d uint32)

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
