// Package image is cr's on-disk checkpoint format: a directory of typed,
// framed, checksummed files (see docs/IMAGE.md, the public contract).
//
// Every metadata file has a 16-byte header (magic, kind, major and minor
// version, header checksum) followed by records. A record is a 4-byte tag, a
// 4-byte payload length, the payload (a JSON object whose field names are
// part of the format, not Go identifiers) and a CRC-32C over tag, length and
// payload. The last record of every file is an END record holding the number
// of records before it, so a file cut at a record boundary is still
// detected. Raw memory pages live apart in pages-PID.img: a page-aligned
// file with a one-page header, indexed by the runs in pagemap-PID.img;
// every run of pages carries its own CRC-32C.
//
// Readers refuse an unknown major version, a wrong magic or kind, a bad
// checksum, an oversized length (checked before allocating) and trailing
// bytes, with errors that say which file and which offset.
//
// Load checks what concerns every record; what a file record of each type
// holds is checked by its kind in pkg/files (files.Load = Load + each
// kind's Validate), which also names the descriptions in `cr show`
// (WriteSummaryWith).
package image
