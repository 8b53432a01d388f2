package image

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// CRVersion is cr's version, recorded in every image (Inventory.CRVersion)
// and printed by `cr version`.
const CRVersion = "0.1.0"

// recordTypes maps each record tag to the type its payload decodes into.
var recordTypes = map[Tag]func() any{
	TagInventory: func() any { return new(Inventory) },
	TagTask:      func() any { return new(Task) },
	TagThread:    func() any { return new(Thread) },
	TagMM:        func() any { return new(MM) },
	TagVMA:       func() any { return new(VMA) },
	TagPageRun:   func() any { return new(PageRun) },
	TagFile:      func() any { return new(File) },
	TagFd:        func() any { return new(Fd) },
	TagFS:        func() any { return new(FS) },
	TagShmem:     func() any { return new(Shmem) },
	TagSysVShm:   func() any { return new(SysVShm) },
	TagSysVSem:   func() any { return new(SysVSem) },
	TagSysVMsg:   func() any { return new(SysVMsg) },
}

// DecodedFile is one image file decoded on its own (`cr show --file`):
// its header and its records, each decoded into its type. A pages file
// has no records: Pages is its size in pages, the header page aside.
type DecodedFile struct {
	File    string          `json:"file"`
	Kind    string          `json:"kind"`
	Format  string          `json:"format"` // major.minor of the header
	Records []DecodedRecord `json:"records,omitempty"`
	Pages   *uint64         `json:"pages,omitempty"`
}

// DecodedRecord is one record of a DecodedFile.
type DecodedRecord struct {
	Tag    string `json:"tag"`
	Offset int64  `json:"offset"`
	Value  any    `json:"value"`
}

// DecodeFile reads dir/name, checks it as the readers do (magic, header,
// every record's length and checksum, the END record) and decodes every
// record by its tag. The kind is taken from the header. Errors are
// *FormatError, *VersionError or *CRIUImageError.
func DecodeFile(dir, name string) (*DecodedFile, error) {
	path := filepath.Join(dir, name)
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := make([]byte, headerSize)
	n, err := io.ReadFull(f, h)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, err
	}
	h = h[:n]
	if isCRIU(h) {
		return nil, &CRIUImageError{name}
	}
	if len(h) < headerSize {
		return nil, &FormatError{name, 0, "file is shorter than its header"}
	}
	kind := Kind(binary.LittleEndian.Uint16(h[8:]))
	if err := checkHeader(name, h, kind); err != nil {
		return nil, err
	}
	d := &DecodedFile{File: name, Kind: kind.String(), Format: fmt.Sprintf("%d.%d", h[10], h[11])}
	if kind == KindPages {
		pf, err := OpenPagesNamed(dir, name)
		if err != nil {
			return nil, err
		}
		defer pf.Close()
		st, err := pf.Stat()
		if err != nil {
			return nil, err
		}
		pages := uint64(st.Size())/PageSize - 1
		d.Pages = &pages
		return d, nil
	}
	if _, ok := kindNames[kind]; !ok {
		return nil, &FormatError{name, 8, fmt.Sprintf("unknown kind %d", kind)}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	recs, err := decode(name, data, kind)
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		mk, ok := recordTypes[r.Tag]
		if !ok {
			return nil, &FormatError{name, r.Offset, fmt.Sprintf("unknown record %s", tagName(r.Tag))}
		}
		v := mk()
		if err := unmarshal(name, r, v); err != nil {
			return nil, err
		}
		d.Records = append(d.Records, DecodedRecord{Tag: tagName(r.Tag), Offset: r.Offset, Value: v})
	}
	return d, nil
}

// ReadInventory reads only the inventory of the image in dir.
func ReadInventory(dir string) (*Inventory, error) {
	recs, err := readFile(dir, InventoryFile, KindInventory)
	if err != nil {
		return nil, err
	}
	if len(recs) != 1 || recs[0].Tag != TagInventory {
		return nil, &FormatError{InventoryFile, headerSize, "expected exactly one inventory record"}
	}
	inv := &Inventory{}
	if err := unmarshal(InventoryFile, recs[0], inv); err != nil {
		return nil, err
	}
	return inv, nil
}
