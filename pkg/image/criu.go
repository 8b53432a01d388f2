package image

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// CRIU image magic numbers (criu/include/magic.h). A CRIU image file (format
// v1.1) starts with IMG_COMMON_MAGIC, or IMG_SERVICE_MAGIC for its service
// files (stats, irmap cache), followed by the file's own magic; older CRIU
// inventories start with INVENTORY_MAGIC itself. All are 32-bit
// little-endian on x86-64.
const (
	criuCommonMagic    = 0x54564319 // IMG_COMMON_MAGIC
	criuServiceMagic   = 0x55105940 // IMG_SERVICE_MAGIC
	criuInventoryMagic = 0x58313116 // INVENTORY_MAGIC
)

// ErrCRIUImage is wrapped by the error for a file (or directory) written by
// CRIU: cr reads only its own format.
var ErrCRIUImage = errors.New("cr cannot read CRIU images")

// CRIUImageError says that an image file is a CRIU image file, not cr's.
type CRIUImageError struct{ File string }

func (e *CRIUImageError) Error() string {
	return fmt.Sprintf("image file %s is a CRIU image: this is a CRIU image directory; %v", e.File, ErrCRIUImage)
}

func (e *CRIUImageError) Unwrap() error { return ErrCRIUImage }

// isCRIU reports whether a file's first bytes are a CRIU image's magic.
func isCRIU(h []byte) bool {
	if len(h) < 4 {
		return false
	}
	switch binary.LittleEndian.Uint32(h) {
	case criuCommonMagic, criuServiceMagic, criuInventoryMagic:
		return true
	}
	return false
}

// IsCRIUDir reports whether dir holds a CRIU image (its inventory.img
// starts with a CRIU magic number).
func IsCRIUDir(dir string) bool {
	f, err := os.Open(filepath.Join(dir, InventoryFile))
	if err != nil {
		return false
	}
	defer f.Close()
	h := make([]byte, 8)
	n, _ := f.Read(h)
	return isCRIU(h[:n])
}
