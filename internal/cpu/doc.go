// Package cpu describes this machine's register state format and feature
// flags, and converts XSAVE state between machines.
//
// The XSAVE area (Intel SDM vol. 1, chapter 13) has a fixed part, the
// 512-byte legacy region (x87, SSE) and the 64-byte header (XSTATE_BV,
// XCOMP_BV), and extended components (AVX, AVX-512, PKRU, AMX…) at offsets
// that differ from CPU to CPU: CPUID leaf 0DH sub-leaf i gives component
// i's size (EAX) and offset (EBX) in the standard format that ptrace's
// NT_X86_XSTATE uses; XCR0 (XGETBV) says which are enabled. Layout, Split
// and Build turn an area into per-component bytes (XState) and back in
// another machine's layout; Layout.Unmet is the rule for which components
// an image may lose on the way. FeatureNames and MissingFeatures compare
// the CPUID feature flags user code may have chosen code paths by.
//
// Nothing here panics on foreign input: layouts and areas that do not fit
// are errors.
package cpu
