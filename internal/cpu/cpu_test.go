package cpu

import "testing"

// TestXSave: x87, SSE and AVX are enabled on every machine cr supports, and
// the area is at least the legacy area plus the XSAVE header.
func TestXSave(t *testing.T) {
	x := XCR0()
	if x&7 != 7 {
		t.Fatalf("XCR0 %#x lacks x87/SSE/AVX", x)
	}
	if n := XSaveSize(); n < 576 {
		t.Fatalf("XSAVE size %d", n)
	}
	t.Logf("XCR0 %#x, XSAVE area %d bytes", x, XSaveSize())
}
