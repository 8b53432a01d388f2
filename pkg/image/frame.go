package image

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"strconv"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// CRC returns the CRC-32C of b.
func CRC(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// UpdateCRC extends a running CRC-32C with b.
func UpdateCRC(crc uint32, b []byte) uint32 { return crc32.Update(crc, castagnoli, b) }

func fmtName(kind string, pid int) string { return kind + "-" + strconv.Itoa(pid) + ".img" }

// Magic starts every image file.
var Magic = [8]byte{'C', 'R', 'I', 'M', 'A', 'G', 'E', '\n'}

const (
	headerSize = 16
	recordHead = 8
	// MaxRecord bounds a record's payload; longer lengths are rejected before
	// anything is allocated.
	MaxRecord = 64 << 20
)

// FormatError says what is wrong with an image file and where.
type FormatError struct {
	File   string
	Offset int64
	Msg    string
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("image file %s is corrupted or truncated at offset %d: %s", e.File, e.Offset, e.Msg)
}

// VersionError is an image written in a format version this cr cannot read.
type VersionError struct {
	File         string
	Major, Minor int
}

func (e *VersionError) Error() string {
	return fmt.Sprintf("image file %s has format version %d.%d; this cr reads version %d.x: use a matching cr to restore it",
		e.File, e.Major, e.Minor, FormatMajor)
}

func header(kind Kind) []byte {
	h := make([]byte, headerSize)
	copy(h, Magic[:])
	binary.LittleEndian.PutUint16(h[8:], uint16(kind))
	h[10] = FormatMajor
	h[11] = FormatMinor
	binary.LittleEndian.PutUint32(h[12:], CRC(h[:12]))
	return h
}

func checkHeader(name string, h []byte, kind Kind) error {
	if isCRIU(h) {
		return &CRIUImageError{name}
	}
	if len(h) < headerSize {
		return &FormatError{name, 0, "file is shorter than its header"}
	}
	if string(h[:8]) != string(Magic[:]) {
		return &FormatError{name, 0, "not a cr image file (bad magic)"}
	}
	if CRC(h[:12]) != binary.LittleEndian.Uint32(h[12:]) {
		return &FormatError{name, 12, "header checksum mismatch"}
	}
	if h[10] != FormatMajor {
		return &VersionError{name, int(h[10]), int(h[11])}
	}
	if k := Kind(binary.LittleEndian.Uint16(h[8:])); k != kind {
		return &FormatError{name, 8, fmt.Sprintf("file holds %s records, expected %s", k, kind)}
	}
	return nil
}

// encoder writes one framed file.
type encoder struct {
	w     *bufio.Writer
	count uint64
	err   error
}

func newEncoder(w io.Writer, kind Kind) *encoder {
	e := &encoder{w: bufio.NewWriterSize(w, 64<<10)}
	_, e.err = e.w.Write(header(kind))
	return e
}

func (e *encoder) raw(tag Tag, payload []byte) {
	if e.err != nil {
		return
	}
	if len(payload) > MaxRecord {
		e.err = fmt.Errorf("a %s record of %d bytes exceeds the format's limit of %d", tagName(tag), len(payload), MaxRecord)
		return
	}
	var h [recordHead]byte
	binary.LittleEndian.PutUint32(h[0:], uint32(tag))
	binary.LittleEndian.PutUint32(h[4:], uint32(len(payload)))
	crc := UpdateCRC(CRC(h[:]), payload)
	var c [4]byte
	binary.LittleEndian.PutUint32(c[:], crc)
	if _, e.err = e.w.Write(h[:]); e.err == nil {
		if _, e.err = e.w.Write(payload); e.err == nil {
			_, e.err = e.w.Write(c[:])
		}
	}
}

func (e *encoder) put(tag Tag, v any) {
	if e.err != nil {
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		e.err = err
		return
	}
	e.raw(tag, b)
	e.count++
}

func (e *encoder) close() error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], e.count)
	e.raw(TagEnd, b[:])
	if e.err != nil {
		return e.err
	}
	return e.w.Flush()
}

// Record is one decoded record.
type Record struct {
	Tag     Tag
	Offset  int64
	Payload []byte
}

// decode splits a whole framed file into records, checking everything.
func decode(name string, data []byte, kind Kind) ([]Record, error) {
	if err := checkHeader(name, data, kind); err != nil {
		return nil, err
	}
	off := int64(headerSize)
	var recs []Record
	for {
		rest := data[off:]
		if len(rest) < recordHead {
			return nil, &FormatError{name, off, "file ends inside a record header (no END record)"}
		}
		tag := Tag(binary.LittleEndian.Uint32(rest[0:]))
		n := binary.LittleEndian.Uint32(rest[4:])
		if n > MaxRecord {
			return nil, &FormatError{name, off, fmt.Sprintf("record length %d exceeds the limit of %d", n, MaxRecord)}
		}
		if uint64(len(rest)) < uint64(recordHead)+uint64(n)+4 {
			return nil, &FormatError{name, off, fmt.Sprintf("record of %d bytes is cut short", n)}
		}
		payload := rest[recordHead : recordHead+n]
		want := binary.LittleEndian.Uint32(rest[recordHead+n:])
		if UpdateCRC(CRC(rest[:recordHead]), payload) != want {
			return nil, &FormatError{name, off, "record checksum mismatch"}
		}
		next := off + recordHead + int64(n) + 4
		if tag == TagEnd {
			if n != 8 || binary.LittleEndian.Uint64(payload) != uint64(len(recs)) {
				return nil, &FormatError{name, off, "END record does not match the number of records"}
			}
			if next != int64(len(data)) {
				return nil, &FormatError{name, next, "unexpected bytes after the END record"}
			}
			return recs, nil
		}
		recs = append(recs, Record{Tag: tag, Offset: off, Payload: payload})
		off = next
	}
}

func unmarshal(name string, r Record, v any) error {
	if err := json.Unmarshal(r.Payload, v); err != nil {
		return &FormatError{name, r.Offset, fmt.Sprintf("bad %s record: %v", tagName(r.Tag), err)}
	}
	return nil
}

func tagName(t Tag) string {
	switch t {
	case TagInventory:
		return "inventory"
	case TagTask:
		return "task"
	case TagThread:
		return "thread"
	case TagMM:
		return "mm"
	case TagVMA:
		return "vma"
	case TagPageRun:
		return "page run"
	case TagFile:
		return "file"
	case TagFd:
		return "fd"
	case TagFS:
		return "fs"
	case TagShmem:
		return "shmem"
	case TagSysVShm:
		return "sysv shm"
	case TagSysVSem:
		return "sysv sem"
	case TagSysVMsg:
		return "sysv msg"
	}
	return "tag " + strconv.Itoa(int(t))
}
