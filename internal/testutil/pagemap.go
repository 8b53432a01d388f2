package testutil

import (
	"encoding/binary"
	"fmt"
	"os"
	"testing"
)

// PFNs returns the page frame numbers of n pages at addr of pid (0 for a
// page that is not present), from /proc/PID/pagemap (root sees PFNs).
func PFNs(t testing.TB, pid int, addr uint64, n int) []uint64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, n*8)
	if _, err := f.ReadAt(buf, int64(addr/4096*8)); err != nil {
		t.Fatal(err)
	}
	out := make([]uint64, n)
	for i := range out {
		out[i] = binary.LittleEndian.Uint64(buf[i*8:]) & (1<<55 - 1)
	}
	return out
}
