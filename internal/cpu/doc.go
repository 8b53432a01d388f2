// Package cpu tells which XSAVE state components this machine's kernel
// enables, so that restore can refuse an image that uses others before
// anything is created (Intel SDM vol. 1, 13.2 and 13.3: XCR0 through
// XGETBV; CPUID leaf 0DH, sub-leaf 0, EBX: the XSAVE area size for the
// components enabled in XCR0).
package cpu
