package memdump_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/dump"
	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/restore"
	"github.com/stretchr/testify/require"
)

// layoutMap is one mapping of testdata/pagelayout.c.
type layoutMap struct {
	pages   int
	prot    string // "rw", "r" or "-"
	huge    bool   // MADV_HUGEPAGE (else MADV_NOHUGEPAGE)
	gap     int    // pages between the previous mapping and this one (0: adjacent)
	step    int    // if > 0, pages 0, step, 2*step... are written
	written []int  // (else) the written pages, ascending
}

func (m *layoutMap) isWritten() []bool {
	w := make([]bool, m.pages)
	if m.step > 0 {
		for i := 0; i < m.pages; i += m.step {
			w[i] = true
		}
	}
	for _, i := range m.written {
		w[i] = true
	}
	return w
}

func (m *layoutMap) String() string {
	return fmt.Sprintf("%d pages %s huge=%v gap=%d step=%d written=%d", m.pages, m.prot, m.huge, m.gap, m.step, len(m.written))
}

// layoutPage is what written page i of mapping m holds (pattern() and
// seed_of() in the fixture).
func layoutPage(m, i int) []byte {
	seed := uint64(m+1)<<20 + uint64(i)
	b := make([]byte, ps)
	for off := uint64(0); off < ps; off += 8 {
		binary.LittleEndian.PutUint64(b[off:], (off*2654435761)^0xdeadbeef^(seed<<40))
	}
	return b
}

func writeLayout(t *testing.T, maps []layoutMap) string {
	var b strings.Builder
	for _, m := range maps {
		huge := 0
		if m.huge {
			huge = 1
		}
		fmt.Fprintf(&b, "map %d %s %d %d\n", m.pages, m.prot, huge, m.gap)
		if m.step > 0 {
			fmt.Fprintf(&b, "s 0 %d\n", m.step)
		}
		for i := 0; i < len(m.written); i += 64 {
			b.WriteString("w")
			for _, p := range m.written[i:min(i+64, len(m.written))] {
				fmt.Fprintf(&b, " %d", p)
			}
			b.WriteString("\n")
		}
	}
	path := filepath.Join(t.TempDir(), "layout")
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o600))
	return path
}

// mapsIn returns the lines of /proc/PID/maps inside [lo, hi).
func mapsIn(t *testing.T, pid int, lo, hi uint64) []string {
	f, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	require.NoError(t, err)
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		s, e, _ := strings.Cut(fields[0], "-")
		start, _ := strconv.ParseUint(s, 16, 64)
		end, _ := strconv.ParseUint(e, 16, 64)
		if start >= lo && end <= hi {
			out = append(out, fields[0]+" "+fields[1])
		}
	}
	return out
}

// layoutRoundTrip starts pagelayout with maps, dumps it, restores it, and
// compares every byte of every mapping from outside (/proc/PID/mem) and
// from inside (the fixture's own check). It returns the loaded image.
func layoutRoundTrip(t *testing.T, maps []layoutMap, fill string) *image.Checkpoint {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "pagelayout"), writeLayout(t, maps))
	addrs := p.IntsInfo(t, "maps")
	require.Len(t, addrs, len(maps))
	lo := uint64(addrs[0])
	last := len(maps) - 1
	hi := uint64(addrs[last]) + uint64(maps[last].pages)*ps
	before := mapsIn(t, p.Pid, lo, hi)
	t.Logf("transparent huge pages in the mappings: %d kB", anonHuge(t, p.Pid, lo, hi))

	dir := filepath.Join(t.TempDir(), "img")
	t0 := time.Now()
	_, err := dump.Run(context.Background(), dump.Options{Pid: p.Pid, Dir: dir})
	require.NoError(t, err)
	tDump := time.Since(t0)
	p.Kill()
	ck, err := image.Load(dir)
	require.NoError(t, err, "the dump wrote an image cr cannot load")
	require.NoError(t, image.VerifyPages(dir, ck.Processes[0]))

	t0 = time.Now()
	res, err := restore.Run(context.Background(), restore.Options{Dir: dir, Fill: fill})
	require.NoError(t, err)
	tRestore := time.Since(t0)
	q := testutil.Adopt(t, res.Pid, p.Dir)
	q.Info = p.Info
	t.Logf("%d page runs; dump %v, restore %v", len(ck.Processes[0].PageMap), tDump, tRestore)

	require.Equal(t, before, mapsIn(t, q.Pid, lo, hi), "mappings after restore")
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", q.Pid))
	require.NoError(t, err)
	defer mem.Close()
	zero := make([]byte, ps)
	buf := make([]byte, 1<<20)
	for mi := range maps {
		m := &maps[mi]
		w := m.isWritten()
		base := uint64(addrs[mi])
		for first := 0; first < m.pages; first += len(buf) / ps {
			n := min(m.pages-first, len(buf)/ps)
			_, err := mem.ReadAt(buf[:n*ps], int64(base)+int64(first*ps))
			require.NoError(t, err, "read map %d page %d of pid %d", mi, first, q.Pid)
			for i := first; i < first+n; i++ {
				got := buf[(i-first)*ps : (i-first+1)*ps]
				want := zero
				if w[i] {
					want = layoutPage(mi, i)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("map %d (%v) page %d (%#x): restored bytes differ (written: %v)", mi, m, i, base+uint64(i)*ps, w[i])
				}
			}
		}
	}
	q.Check(t) // the fixture checks from inside
	require.Equal(t, 0, q.Stop(t))
	return ck
}

// anonHuge sums AnonHugePages of the mappings inside [lo, hi), in kB.
func anonHuge(t *testing.T, pid int, lo, hi uint64) (kb uint64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	require.NoError(t, err)
	in := false
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		if s, e, ok := strings.Cut(f[0], "-"); ok && len(f) >= 5 {
			start, err1 := strconv.ParseUint(s, 16, 64)
			end, err2 := strconv.ParseUint(e, 16, 64)
			if err1 == nil && err2 == nil {
				in = start >= lo && end <= hi
				continue
			}
		}
		if in && f[0] == "AnonHugePages:" && len(f) >= 2 {
			n, _ := strconv.ParseUint(f[1], 10, 64)
			kb += n
		}
	}
	return kb
}

// savedPages counts the pages of the page map inside [start, end).
func savedPages(p *image.Process, start, end uint64) (n uint64) {
	for _, r := range p.PageMap {
		if r.Addr >= start && r.Addr+r.Pages*ps <= end {
			n += r.Pages
		}
	}
	return n
}

// TestEveryNthPage is issue 9, finding 1: a 256 MiB private anonymous
// MAP_NORESERVE mapping written every 2nd (or 97th) page dumped fine and
// left an image that could not be loaded ("bad page run"): PAGEMAP_SCAN
// reported a stale walk_end and the scanner saved the last runs twice.
func TestEveryNthPage(t *testing.T) {
	for _, step := range []int{2, 97} {
		t.Run(strconv.Itoa(step), func(t *testing.T) {
			maps := []layoutMap{{pages: 256 << 20 / ps, prot: "rw", step: step}}
			ck := layoutRoundTrip(t, maps, "")
			// Exactly the written pages, once.
			var want uint64
			for _, w := range maps[0].isWritten() {
				if w {
					want++
				}
			}
			p := ck.Processes[0]
			var total uint64
			for _, r := range p.PageMap {
				total += r.Pages
			}
			require.GreaterOrEqual(t, total, want)
			var base uint64
			for _, r := range p.PageMap { // the mapping is the only 256 MiB one
				for _, v := range p.VMAs {
					if v.Len() == 256<<20 && v.Start <= r.Addr && r.Addr < v.End {
						base = v.Start
					}
				}
			}
			require.NotZero(t, base, "no saved page in the 256 MiB mapping")
			require.Equal(t, want, savedPages(p, base, base+256<<20), "pages saved from the 256 MiB mapping")
		})
	}
}

// randomLayout makes 4-8 mappings: different sizes, protections, huge page
// advice, gaps or none (adjacent mappings get different protections or
// advice, so that they stay separate VMAs), written pages at their edges,
// and at least one mapping with more runs than one PAGEMAP_SCAN call returns
// (the scanner's vector holds 1024 regions; the kernel's bounce buffer 512).
func randomLayout(r *rand.Rand) []layoutMap {
	prots := []string{"rw", "r", "-"}
	n := 4 + r.IntN(5)
	manyRuns := r.IntN(n)
	var maps []layoutMap
	for i := 0; i < n; i++ {
		m := layoutMap{prot: prots[r.IntN(3)], huge: r.IntN(4) == 0, gap: r.IntN(3) * (1 + r.IntN(16))}
		if i > 0 && m.gap == 0 && m.prot == maps[i-1].prot && m.huge == maps[i-1].huge {
			m.huge = !m.huge // adjacent: keep them apart
		}
		switch {
		case i == manyRuns:
			// Single-page runs: more than one scanner call returns, and
			// the last call needs two of the kernel's page walks (a
			// stale walk_end then made the scanner report runs twice).
			m.pages = 2*(1024*(1+r.IntN(2))+513+r.IntN(510)) + r.IntN(2)
			m.step = 2
		case m.huge:
			m.pages = 512 + r.IntN(1024) // holds at least one aligned 2 MiB range, or nearly
		default:
			m.pages = 1 + r.IntN(1500)
		}
		if m.step == 0 {
			density := []float64{0.002, 0.05, 0.5, 0.9, 1}[r.IntN(5)]
			for p := 0; p < m.pages; p++ {
				if r.Float64() < density || (p == 0 || p == m.pages-1) && r.IntN(2) == 0 {
					m.written = append(m.written, p)
				}
			}
		} else if r.IntN(2) == 0 {
			m.written = append(m.written, m.pages-1) // the last page too
		}
		maps = append(maps, m)
	}
	return maps
}

// TestPageLayoutProperty dumps and restores random page layouts and
// compares them byte for byte: a fixed seed, and a new one each run (logged:
// CR_LAYOUT_SEED=N reruns it).
func TestPageLayoutProperty(t *testing.T) {
	seeds := []uint64{1}
	if s := os.Getenv("CR_LAYOUT_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 0, 64)
		require.NoError(t, err)
		seeds = []uint64{n}
	} else {
		seeds = append(seeds, uint64(time.Now().UnixNano()))
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 9))
			maps := randomLayout(r)
			fill := []string{"preadv", "writev"}[seed%2]
			t.Logf("seed %d (rerun with CR_LAYOUT_SEED=%d), fill %s", seed, seed, fill)
			for i := range maps {
				t.Logf("map %d: %v", i, &maps[i])
			}
			layoutRoundTrip(t, maps, fill)
		})
	}
}
