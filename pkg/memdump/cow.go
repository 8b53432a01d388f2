package memdump

import (
	"encoding/binary"
	"fmt"
	"os"

	"github.com/cr-tools/cr/pkg/image"
)

const (
	pmPresent = 1 << 63
	pmPFNMask = 1<<55 - 1
)

// pfns reads the page frame numbers of [addr, addr+pages*4K) of pid from
// /proc/PID/pagemap (0 for a page that is not present; PFNs are visible to
// root only).
func pfns(f *os.File, addr, pages uint64) ([]uint64, error) {
	buf := make([]byte, pages*8)
	n, err := f.ReadAt(buf, int64(addr/image.PageSize*8))
	if err != nil && n != len(buf) {
		return nil, err
	}
	out := make([]uint64, pages)
	for i := range out {
		e := binary.LittleEndian.Uint64(buf[i*8:])
		if e&pmPresent != 0 {
			out[i] = e & pmPFNMask
		}
	}
	return out, nil
}

// SplitShared splits a child's runs into the runs it must save and the
// runs whose pages are the very pages its parent has at the same addresses
// (shared copy-on-write since the fork, never written by either): those are
// saved once, in the parent's image.
func SplitShared(child, parent int, runs []Run, vmas []image.VMA) (own, shared []Run, err error) {
	cf, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", child))
	if err != nil {
		return nil, nil, err
	}
	defer cf.Close()
	pf, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", parent))
	if err != nil {
		return nil, nil, err
	}
	defer pf.Close()
	add := func(list []Run, addr uint64) []Run {
		if l := len(list); l > 0 && list[l-1].Addr+list[l-1].Pages*image.PageSize == addr {
			list[l-1].Pages++
			return list
		}
		return append(list, Run{Addr: addr, Pages: 1})
	}
	for _, r := range runs {
		// In chunks, to bound memory on huge runs.
		for done := uint64(0); done < r.Pages; {
			n := min(r.Pages-done, 1<<16)
			addr := r.Addr + done*image.PageSize
			c, err := pfns(cf, addr, n)
			if err != nil {
				return nil, nil, err
			}
			p, err := pfns(pf, addr, n)
			if err != nil {
				return nil, nil, err
			}
			for i := uint64(0); i < n; i++ {
				a := addr + i*image.PageSize
				if c[i] != 0 && c[i] == p[i] {
					shared = add(shared, a)
				} else {
					own = add(own, a)
				}
			}
			done += n
		}
	}
	return splitAtVMAs(own, vmas), splitAtVMAs(shared, vmas), nil
}
