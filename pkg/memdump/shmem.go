package memdump

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"

	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// ShmemSource is where a shared memory object can be read: a /proc path
// (map_files entry or fd link) that opens the object itself.
type ShmemSource struct {
	Path string // /proc/PID/map_files/START-END or /proc/PID/fd/N
	Name string // the link target, e.g. "/dev/zero (deleted)", "/memfd:x (deleted)"
}

// DumpShmem saves the contents of a shared memory object into w (only the
// ranges holding data: SEEK_DATA/SEEK_HOLE) and describes it.
func DumpShmem(id uint64, src ShmemSource, w *image.PagesWriter) (image.Shmem, error) {
	sh := image.Shmem{ID: id, Kind: image.ShmemAnon}
	if name, ok := strings.CutPrefix(src.Name, "/memfd:"); ok {
		sh.Kind = image.ShmemMemfd
		sh.Name = strings.TrimSuffix(name, " (deleted)")
	}
	if id&(1<<63) != 0 { // image.GhostID: a deleted file
		sh.Kind = image.ShmemGhost
		sh.Path = strings.TrimSuffix(src.Name, " (deleted)")
	}
	f, err := os.Open(src.Path)
	if err != nil {
		return sh, fmt.Errorf("open shared memory %s: %w", src.Name, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return sh, err
	}
	sh.Size = st.Size()
	if sh.Kind == image.ShmemGhost {
		if sys, ok := st.Sys().(*syscall.Stat_t); ok {
			sh.Mode, sh.Uid, sh.Gid = sys.Mode, sys.Uid, sys.Gid
		}
	}
	if sh.Kind == image.ShmemMemfd {
		if seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0); err == nil {
			sh.Seals = seals
		}
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < sh.Size; {
		data, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole remains
		}
		if err != nil {
			return sh, fmt.Errorf("shared memory %s: %w", src.Name, err)
		}
		hole, err := unix.Seek(int(f.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return sh, err
		}
		data &^= image.PageSize - 1
		hole = min((hole+image.PageSize-1)&^(image.PageSize-1), (sh.Size+image.PageSize-1)&^(image.PageSize-1))
		run := image.PageRun{Addr: uint64(data), Offset: uint64(w.Offset())}
		for pos := data; pos < hole; {
			n := min(int64(len(buf)), hole-pos)
			chunk := buf[:n]
			got, err := f.ReadAt(chunk, pos)
			if err != nil && !(errors.Is(err, io.EOF) && pos+int64(got) >= sh.Size) {
				return sh, fmt.Errorf("read shared memory %s: %w", src.Name, err)
			}
			clear(chunk[got:]) // the end of the last page, past the object's size
			run.CRC = image.UpdateCRC(run.CRC, chunk)
			if err := w.Write(chunk); err != nil {
				return sh, err
			}
			pos += n
		}
		run.Pages = uint64(hole-data) / image.PageSize
		if run.Pages > 0 {
			sh.Runs = append(sh.Runs, run)
		}
		off = hole
	}
	return sh, nil
}
