package memdump_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/memdump"
)

const smapsSample = `55d0c0a00000-55d0c0a02000 r--p 00000000 fd:01 1234567                    /usr/bin/my prog
Size:                  8 kB
KernelPageSize:        4 kB
Rss:                   8 kB
VmFlags: rd mr mw me dw sd
55d0c0a02000-55d0c0a03000 rw-p 00002000 fd:01 1234567                    /usr/bin/my prog
Size:                  4 kB
THPeligible:    0
VmFlags: rd wr mr mw me dw ac sd
55d0c1000000-55d0c1021000 rw-p 00000000 00:00 0                          [heap]
Size:                132 kB
VmFlags: rd wr mr mw me ac sd
7f0000000000-7f0000100000 rw-s 00000000 00:05 98765                      /dev/zero (deleted)
VmFlags: rd wr sh mr mw me ms sd
7f0000200000-7f0000201000 rw-p 00000000 00:00 0 
VmFlags: rd wr mr mw me ac sd
7f0000300000-7f0000301000 r--p 00001000 08:02 42                         /tmp/dir with  two  spaces/lib (1).so
VmFlags: rd mr mw me sd
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]
VmFlags: rd wr mr mw me gd ac
7ffc00100000-7ffc00104000 r--p 00000000 00:00 0                          [vvar]
VmFlags: rd mr pf io de dd sd
7ffc00104000-7ffc00106000 r--p 00000000 00:00 0                          [vvar_vclock]
VmFlags: rd mr pf io de dd sd
7ffc00106000-7ffc00108000 r-xp 00000000 00:00 0                          [vdso]
Size:                  8 kB
VmFlags: rd ex mr mw me de sd
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
`

func TestParseSmaps(t *testing.T) {
	ms, err := memdump.ParseSmaps([]byte(smapsSample))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		start, end uint64
		perms      string
		off        uint64
		dev        string
		ino        uint64
		path       string
		flags      string
	}{
		{0x55d0c0a00000, 0x55d0c0a02000, "r--p", 0, "fd:01", 1234567, "/usr/bin/my prog", "rd mr mw me dw sd"},
		{0x55d0c0a02000, 0x55d0c0a03000, "rw-p", 0x2000, "fd:01", 1234567, "/usr/bin/my prog", "rd wr mr mw me dw ac sd"},
		{0x55d0c1000000, 0x55d0c1021000, "rw-p", 0, "00:00", 0, "[heap]", "rd wr mr mw me ac sd"},
		{0x7f0000000000, 0x7f0000100000, "rw-s", 0, "00:05", 98765, "/dev/zero (deleted)", "rd wr sh mr mw me ms sd"},
		{0x7f0000200000, 0x7f0000201000, "rw-p", 0, "00:00", 0, "", "rd wr mr mw me ac sd"},
		{0x7f0000300000, 0x7f0000301000, "r--p", 0x1000, "08:02", 42, "/tmp/dir with  two  spaces/lib (1).so", "rd mr mw me sd"},
		{0x7ffc00000000, 0x7ffc00021000, "rw-p", 0, "00:00", 0, "[stack]", "rd wr mr mw me gd ac"},
		{0x7ffc00100000, 0x7ffc00104000, "r--p", 0, "00:00", 0, "[vvar]", "rd mr pf io de dd sd"},
		{0x7ffc00104000, 0x7ffc00106000, "r--p", 0, "00:00", 0, "[vvar_vclock]", "rd mr pf io de dd sd"},
		{0x7ffc00106000, 0x7ffc00108000, "r-xp", 0, "00:00", 0, "[vdso]", "rd ex mr mw me de sd"},
		{0xffffffffff600000, 0xffffffffff601000, "--xp", 0, "00:00", 0, "[vsyscall]", ""},
	}
	if len(ms) != len(want) {
		t.Fatalf("%d mappings, want %d: %+v", len(ms), len(want), ms)
	}
	for i, w := range want {
		m := ms[i]
		if m.Start != w.start || m.End != w.end || m.Perms != w.perms || m.Offset != w.off || m.Dev != w.dev ||
			m.Inode != w.ino || m.Path != w.path || strings.Join(m.VmFlags, " ") != w.flags {
			t.Errorf("mapping %d: %+v\nwant %+v", i, m, w)
		}
	}
	if !ms[3].Shared() || ms[2].Shared() {
		t.Error("Shared()")
	}
	if !ms[6].HasVmFlag("gd") || ms[2].HasVmFlag("gd") || !ms[7].HasVmFlag("io") {
		t.Error("HasVmFlag()")
	}

	// A maps file (no field lines) parses the same, without VmFlags.
	var maps []string
	for _, l := range strings.Split(smapsSample, "\n") {
		if l != "" && !strings.Contains(l, ":  ") && !strings.HasPrefix(l, "VmFlags") && !strings.HasPrefix(l, "THP") &&
			!strings.HasPrefix(l, "Size") && !strings.HasPrefix(l, "Rss") && !strings.HasPrefix(l, "KernelPageSize") {
			maps = append(maps, l)
		}
	}
	ms2, err := memdump.ParseSmaps([]byte(strings.Join(maps, "\n")))
	if err != nil || len(ms2) != len(want) || ms2[5].Path != want[5].path || ms2[0].VmFlags != nil {
		t.Errorf("maps: %v %+v", err, ms2)
	}

	for _, bad := range []string{
		"55d0c0a00000-55d0c0a02000 r--p 00000000 fd:01\n",          // too few fields
		"55d0c0a00000-zz r--p 00000000 fd:01 1 /x\n",               // bad end
		"55d0c0a00000-55d0c0a02000 r--pq 00000000 fd:01 1 /x\n",    // bad perms
		"55d0c0a00000-55d0c0a02000 r--p 0000000g fd:01 1 /x\n",     // bad offset
		"55d0c0a00000-55d0c0a02000 r--p 00000000 fd:01 inode /x\n", // bad inode
	} {
		if _, err := memdump.ParseSmaps([]byte(bad)); err == nil {
			t.Errorf("ParseSmaps(%q) succeeded", bad)
		}
	}
	// Field lines and blank lines alone are not mappings.
	if ms, err := memdump.ParseSmaps([]byte("Rss: 4 kB\n\nVmFlags: rd\n")); err != nil || len(ms) != 0 {
		t.Errorf("got %v %+v", err, ms)
	}
}

func TestVMAs(t *testing.T) {
	ms, err := memdump.ParseSmaps([]byte(smapsSample))
	if err != nil {
		t.Fatal(err)
	}
	// Only the mappings without a file (VMAs stats files through /proc).
	var anon []memdump.Mapping
	for _, m := range ms {
		if m.Inode == 0 {
			anon = append(anon, m)
		}
	}
	vmas, err := memdump.VMAs(os.Getpid(), anon)
	if err != nil {
		t.Fatal(err)
	}
	type w struct {
		special, prot string
		flags         string
	}
	want := []w{
		{image.SpecialHeap, "rw", ""}, {"", "rw", ""}, {image.SpecialStack, "rw", image.VMAGrowsDown},
		{image.SpecialVvar, "r", ""}, {image.SpecialVvarVclock, "r", ""}, {image.SpecialVdso, "rx", ""},
	} // [vsyscall] is skipped
	if len(vmas) != len(want) {
		t.Fatalf("%d vmas: %+v", len(vmas), vmas)
	}
	for i, x := range want {
		v := vmas[i]
		if v.Special != x.special || v.Prot != x.prot || strings.Join(v.Flags, ",") != x.flags || v.File != nil {
			t.Errorf("vma %d: %+v, want %+v", i, v, x)
		}
	}
	if vmas[0].Start != 0x55d0c1000000 || vmas[0].End != 0x55d0c1021000 || len(vmas[0].VmFlags) == 0 {
		t.Errorf("heap vma %+v", vmas[0])
	}
	if memdump.SavesPages(&vmas[5]) || memdump.SavesPages(&vmas[3]) || !memdump.SavesPages(&vmas[0]) {
		t.Error("SavesPages")
	}

	for _, c := range []struct{ line, what string }{
		{"7f0000000000-7f0000001000 rw-s 00000000 00:01 0 \n", "shared anonymous memory"},
		{"7f0000000000-7f0000001000 r-xp 00000000 00:00 0 [uprobes]\n", "[uprobes]"},
		{"7f0000000000-7f0000001000 rw-p 00000000 00:00 0 anon_inode:[io_uring]\n", "anon_inode"},
		{"7f0000000000-7f0000001000 rw-p 00000000 00:00 0 \nVmFlags: rd wr io pf\n", "device mapping"},
		{"7f0000000000-7f0000010000 rw-s 00000000 00:01 32769                      /SYSV6372abcd (deleted)\nVmFlags: rd wr sh mr mw me ms ht\n",
			"SysV shared memory segment in huge pages (SHM_HUGETLB; key 0x6372abcd, shmid 32769)"},
		{"7f0000000000-7f0000001000 rw-s 00000000 00:07 12                         /secretmem (deleted)\n", "secret memory (memfd_secret(2))"},
		{"7f5daba00000-7f5dabc00000 rw-p 00000000 00:11 2175914                    /anon_hugepage (deleted)\nVmFlags: rd wr mr mw me ac ht\n", "is hugetlb memory (MAP_HUGETLB)"},
		{"7f5daba00000-7f5dabc00000 rw-s 00000000 00:2a 17                         /dev/hugepages/x\nVmFlags: rd wr sh mr mw me ms ht\n", "is a hugetlbfs file (/dev/hugepages/x)"},
	} {
		ms, err := memdump.ParseSmaps([]byte(c.line))
		if err != nil {
			t.Fatal(err)
		}
		_, err = memdump.VMAs(os.Getpid(), ms)
		var ue *memdump.UnsupportedError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), c.what) {
			t.Errorf("%q: error %v, want an UnsupportedError about %s", c.line, err, c.what)
		}
	}
}

// TestVMAsSysV: an attached SysV segment is a VMA naming its shmid (the
// inode number, which can be 0).
func TestVMAsSysV(t *testing.T) {
	for _, c := range []struct {
		line string
		id   int
	}{
		{"7f0000000000-7f0000010000 rw-s 00000000 00:01 32769                      /SYSV6372abcd (deleted)\n", 32769},
		{"7f0000000000-7f0000010000 r--s 00000000 00:01 0                          /SYSV00000000 (deleted)\n", 0},
	} {
		ms, err := memdump.ParseSmaps([]byte(c.line))
		if err != nil {
			t.Fatal(err)
		}
		vmas, err := memdump.VMAs(os.Getpid(), ms)
		if err != nil || len(vmas) != 1 || vmas[0].SysVShmid == nil || *vmas[0].SysVShmid != c.id || !vmas[0].Has(image.VMAShared) || memdump.SavesPages(&vmas[0]) {
			t.Errorf("%q: %+v, %v", c.line, vmas, err)
		}
	}
}

// VMAs of the test process itself: file mappings get identities.
func TestVMAsSelf(t *testing.T) {
	ms, err := memdump.ReadSmaps(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	vmas, err := memdump.VMAs(os.Getpid(), ms)
	if err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Executable()
	var sawExe, sawVdso bool
	for _, v := range vmas {
		if v.File != nil && v.File.Path == exe {
			sawExe = true
			if v.File.Ino == 0 || v.File.Size == 0 {
				t.Errorf("exe identity %+v", v.File)
			}
		}
		sawVdso = sawVdso || v.Special == image.SpecialVdso
	}
	if !sawExe || !sawVdso {
		t.Errorf("exe %v vdso %v in %d vmas", sawExe, sawVdso, len(vmas))
	}
}
