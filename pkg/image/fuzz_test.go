package image_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cr-tools/cr/pkg/image"
)

var allKinds = []image.Kind{0, image.KindInventory, image.KindCore, image.KindMM, image.KindPageMap,
	image.KindPages, image.KindFiles, image.KindFds, 99}

// seedImage writes the test image once per fuzz target and returns its
// directory and the bytes of every file in it.
func seedImage(f *testing.F) (string, map[string][]byte) {
	dir, _, _ := newImage(f)
	files := map[string][]byte{}
	for _, name := range append(metaFiles(), image.PagesFile(testPid)) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			f.Fatal(err)
		}
		files[name] = b
	}
	return dir, files
}

func FuzzDecode(f *testing.F) {
	_, files := seedImage(f)
	for _, name := range metaFiles() {
		b := files[name]
		f.Add(b)
		f.Add(b[:len(b)-1])               // cut
		f.Add(append(slices.Clone(b), 0)) // trailing byte
		f.Add(b[:16])                     // header only
		m := slices.Clone(b)              // huge length in the first record
		binary.LittleEndian.PutUint32(m[20:], ^uint32(0))
		f.Add(m)
		m = slices.Clone(b) // flipped payload byte
		m[30] ^= 0xff
		f.Add(m)
	}
	f.Add(files[image.PagesFile(testPid)][:image.PageSize])
	f.Add(frame(image.KindCore, 1, 0))
	f.Add(frame(image.KindFds, 1, 0, rec{image.TagFS, []byte("{}")}, rec{image.TagFd, nil}))
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, data []byte) {
		ok := 0
		for _, kind := range allKinds {
			recs, err := image.Decode("fuzz.img", data, kind)
			if err != nil {
				var fe *image.FormatError
				var ve *image.VersionError
				if !errors.As(err, &fe) && !errors.As(err, &ve) {
					t.Fatalf("kind %v: error of type %T: %v", kind, err, err)
				}
				continue
			}
			ok++
			if len(data) < 16 || binary.LittleEndian.Uint16(data[8:]) != uint16(kind) || data[10] != image.FormatMajor {
				t.Fatalf("kind %v: accepted a file with header % x", kind, data[:min(len(data), 16)])
			}
			end := int64(16)
			for i, r := range recs {
				n := int64(len(r.Payload))
				if r.Offset != end || r.Offset+8+n+4 > int64(len(data)) {
					t.Fatalf("record %d at %d (+%d) outside the input of %d bytes (expected at %d)", i, r.Offset, n, len(data), end)
				}
				if !bytes.Equal(data[r.Offset+8:r.Offset+8+n], r.Payload) {
					t.Fatalf("record %d: payload is not the input's bytes", i)
				}
				if r.Tag == image.TagEnd || binary.LittleEndian.Uint32(data[r.Offset:]) != uint32(r.Tag) ||
					binary.LittleEndian.Uint32(data[r.Offset+4:]) != uint32(n) || n > image.MaxRecord {
					t.Fatalf("record %d: tag %d / length %d do not match the input", i, r.Tag, n)
				}
				end = r.Offset + 8 + n + 4
			}
			// What follows the records is exactly one END record.
			if int64(len(data)) != end+8+8+4 || binary.LittleEndian.Uint64(data[end+8:]) != uint64(len(recs)) {
				t.Fatalf("%d records end at %d, file has %d bytes", len(recs), end, len(data))
			}
		}
		if ok > 1 {
			t.Fatalf("accepted as %d different kinds", ok)
		}
	})
}

// FuzzLoad rewrites one metadata file of a valid image with fuzzed records,
// framed correctly (so that the fuzzer exercises Load's checks rather than
// the CRCs), then runs Load and VerifyPages: they must not panic, and an
// image they accept must be consistent.
//
// The fuzzed data is a list of records separated by '\n', each one a tag
// byte followed by the JSON payload.
func FuzzLoad(f *testing.F) {
	base, files := seedImage(f)
	names := metaFiles()
	kinds := metaKinds()
	for i, name := range names {
		var b []byte
		for _, r := range readRecs(f, base, name, kinds[name]) {
			b = append(b, byte(r.tag))
			b = append(b, r.payload...)
			b = append(b, '\n')
		}
		f.Add(uint8(i), b)
		f.Add(uint8(i), b[:len(b)/2])
	}
	f.Add(uint8(4), []byte("\x06{\"addr\":18446744073709547520,\"pages\":2,\"offset\":4096,\"crc32c\":0}\n"))
	f.Add(uint8(3), []byte("\x04{}\n\x05{\"start\":4096,\"end\":8192,\"prot\":\"rw-\"}\n"))

	// Fuzz targets run one at a time in each process: reuse one image and
	// put the original file back after each run.
	dir := base
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		name := names[int(which)%len(names)]
		defer func() {
			if err := os.WriteFile(filepath.Join(dir, name), files[name], 0o600); err != nil {
				t.Fatal(err)
			}
		}()
		var recs []rec
		for _, line := range bytes.Split(data, []byte{'\n'}) {
			if len(line) == 0 {
				continue
			}
			recs = append(recs, rec{image.Tag(line[0]), line[1:]})
		}
		if err := os.WriteFile(filepath.Join(dir, name), frame(kinds[name], image.FormatMajor, image.FormatMinor, recs...), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := loadAll(dir)
		if err != nil {
			if bytes.Contains([]byte(err.Error()), []byte("PANIC")) {
				t.Fatal(err)
			}
			return
		}
		checkConsistent(t, c, int64(len(files[image.PagesFile(testPid)])))
	})
}

// checkConsistent checks the promises Load makes about an image it accepts.
func checkConsistent(t *testing.T, c *image.Checkpoint, pagesSize int64) {
	if c.Inventory.FormatMajor != image.FormatMajor || len(c.Inventory.Pids) == 0 || len(c.Processes) != len(c.Inventory.Pids) {
		t.Fatalf("bad inventory %+v", c.Inventory)
	}
	ids := map[int]bool{}
	for _, f := range c.Files {
		if ids[f.ID] {
			t.Fatalf("file id %d twice", f.ID)
		}
		ids[f.ID] = true
	}
	for i, p := range c.Processes {
		if p.Task.Pid != c.Inventory.Pids[i] || len(p.Threads) == 0 {
			t.Fatalf("process %d: pid %d, %d threads", i, p.Task.Pid, len(p.Threads))
		}
		var prev uint64
		for _, v := range p.VMAs {
			if v.Start >= v.End || v.Start%image.PageSize != 0 || v.End%image.PageSize != 0 || v.Start < prev {
				t.Fatalf("bad vma %#x-%#x", v.Start, v.End)
			}
			prev = v.End
		}
		next := uint64(image.PageSize)
		prev = 0
		for _, r := range p.PageMap {
			end := r.Addr + r.Pages*image.PageSize
			if r.Pages == 0 || r.Offset != next || r.Addr < prev || end <= r.Addr {
				t.Fatalf("bad run %+v", r)
			}
			in := false
			for _, v := range p.VMAs {
				in = in || (v.Start <= r.Addr && end <= v.End)
			}
			if !in {
				t.Fatalf("run %+v outside every vma", r)
			}
			next += r.Pages * image.PageSize
			prev = end
		}
		if int64(next) != pagesSize {
			t.Fatalf("runs describe %d bytes, pages file has %d", next, pagesSize)
		}
		fds := map[int]bool{}
		for _, fd := range p.Fds {
			if fd.Fd < 0 || fds[fd.Fd] || !ids[fd.FileID] {
				t.Fatalf("bad fd %+v", fd)
			}
			fds[fd.Fd] = true
		}
	}
}
