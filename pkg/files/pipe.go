package files

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// pipe: one end of a pipe(2) ("pipe:[INO]"), record image.Pipe: the
// pipe's inode (both ends carry it), its capacity, and on the read end the
// bytes that sat in it at the dump, read without consuming them (tee(2)
// from a copy of the read end into a pipe of our own), cut into packets
// and stream bytes when any end is in packet mode (O_DIRECT, pipe(7)).
// A pipe whose other end no process of the tree holds is external
// (image.File.External "pipe:[INO]"): the caller gives it back at restore
// and the saved bytes of a read end go into it (FillExternal). Restore
// makes each pipe once with pipe2(2), sets its size, refills it and gives
// every description its own dup with its flags.
type pipe struct{}

func (pipe) Type() string { return image.FilePipe }

func (pipe) Recognize(p *Probe) bool { return strings.HasPrefix(p.Target, "pipe:") }

func (pipe) Dump(p *Probe, f *image.File) error {
	f.Pipe = &image.Pipe{ID: p.Ident.Ino}
	return nil
}

// Resolve checks that both ends of every pipe are in the collection (else
// they are external) and saves the bytes sitting in it.
func (pipe) Resolve(c *Collector, files []*image.File) error {
	type ends struct{ r, w []*image.File }
	pipes := map[uint64]*ends{}
	var order []uint64
	// A pipe any of whose descriptions is in packet mode (O_DIRECT) may
	// hold packets: their boundaries are saved too.
	direct := map[uint64]bool{}
	for _, f := range files {
		if f.Flags&unix.O_DIRECT != 0 {
			direct[f.Pipe.ID] = true
		}
	}
	for _, f := range files {
		p := pipes[f.Pipe.ID]
		if p == nil {
			p = &ends{}
			pipes[f.Pipe.ID] = p
			order = append(order, f.Pipe.ID)
		}
		if f.Flags&unix.O_ACCMODE == unix.O_WRONLY {
			p.w = append(p.w, f)
		} else {
			p.r = append(p.r, f)
		}
	}
	for _, id := range order {
		p := pipes[id]
		if len(p.r) == 0 || len(p.w) == 0 {
			// An end of a pipeline with a process outside the tree: it is
			// external, given back by the caller at restore. A read end's
			// unread bytes are saved (they would be lost with the last
			// reader), a write end's stay in the pipe, with its reader.
			for _, f := range append(p.r, p.w...) {
				f.External = fmt.Sprintf("pipe:[%d]", id)
			}
			if len(p.r) == 0 {
				continue
			}
		}
		rf := p.r[0]
		pid, fd := c.Owner(rf.ID)
		data, size, chunks, err := peekPipe(pid, fd, direct[id])
		if err != nil {
			return fmt.Errorf("fd %d of pid %d: read pipe contents: %w", fd, pid, err)
		}
		rf.Pipe.Data, rf.Pipe.Chunks = data, chunks
		for _, f := range append(p.r, p.w...) {
			f.Pipe.Size = size
		}
	}
	return nil
}

func (pipe) Validate(_ *image.Checkpoint, f *image.File) error {
	if err := need(f.Pipe != nil, f, "pipe record"); err != nil {
		return err
	}
	return checkPipe(f.Pipe)
}

// checkPipe checks a pipe or FIFO record: a size that is not negative, and
// chunks (if any) that cut the saved bytes exactly.
func checkPipe(p *image.Pipe) error {
	if p.Size < 0 {
		return fmt.Errorf("pipe size %d", p.Size)
	}
	if len(p.Chunks) == 0 {
		return nil
	}
	n := 0
	for _, c := range p.Chunks {
		if c.Len <= 0 {
			return fmt.Errorf("a pipe chunk of %d bytes", c.Len)
		}
		n += c.Len
	}
	if n != len(p.Data) {
		return fmt.Errorf("pipe chunks of %d bytes in all for %d saved bytes", n, len(p.Data))
	}
	return nil
}

// pipeState is what one restore's pipe ends share: pipe id -> cr's fds of
// both ends (kept until the restore ends).
type pipeState map[uint64][2]int

func (k pipe) Open(o *Opener, f *image.File) (int, error) {
	st := stateOf[pipeState](o, k)
	if *st == nil {
		*st = pipeState{}
	}
	ends, ok := (*st)[f.Pipe.ID]
	if !ok {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			return 0, fmt.Errorf("pipe2: %w", err)
		}
		ends = p
		(*st)[f.Pipe.ID] = ends
		o.Keep(p[0])
		o.Keep(p[1])
		if f.Pipe.Size > 0 {
			if _, err := unix.FcntlInt(uintptr(p[0]), unix.F_SETPIPE_SZ, f.Pipe.Size); err != nil {
				return 0, fmt.Errorf("pipe size %d: %w", f.Pipe.Size, err)
			}
		}
	}
	fd := ends[0]
	if f.Flags&unix.O_ACCMODE == unix.O_WRONLY {
		fd = ends[1]
	}
	if err := fillPipe(ends[1], f.Pipe, "pipe"); err != nil {
		return 0, err
	}
	// The pipe's fds belong to the state; the description gets a dup.
	fd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	if err := SetFlags(fd, f.Flags); err != nil {
		unix.Close(fd)
		return 0, err
	}
	return fd, nil
}

// FillExternal writes the unread bytes saved from an external pipe's read
// end into the caller's pipe that replaces it, after whatever it holds.
func (pipe) FillExternal(fd int, f *image.File) error {
	if f.Pipe == nil || len(f.Pipe.Data) == 0 {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return fmt.Errorf("%s held %d unread bytes, but its replacement is not a pipe to put them in", f.External, len(f.Pipe.Data))
	}
	w, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", fd), unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%s: open a writer to put its %d unread bytes back: %w", f.External, len(f.Pipe.Data), err)
	}
	defer unix.Close(w)
	return fillNonblock(w, f.Pipe.Data, "pipe "+f.External)
}

// fillPipe puts a pipe's saved bytes back through its write end fd: stream
// bytes as they come, each packet (image.PipeChunk) by one write in packet
// mode (O_DIRECT), so that a read gets it back whole and alone.
func fillPipe(fd int, p *image.Pipe, what string) error {
	if len(p.Chunks) == 0 {
		return fillNonblock(fd, p.Data, what)
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return err
	}
	defer unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl)
	data := p.Data
	for _, c := range p.Chunks {
		if c.Len <= 0 || c.Len > len(data) || (c.Packet && c.Len > image.PageSize) {
			return fmt.Errorf("image is inconsistent: %s: a chunk of %d bytes in %d saved bytes", what, c.Len, len(data))
		}
		mode := fl &^ unix.O_DIRECT
		if c.Packet {
			mode = fl | unix.O_DIRECT
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, mode); err != nil {
			return fmt.Errorf("%s: packet mode: %w", what, err)
		}
		if !c.Packet {
			if err := fillNonblock(fd, data[:c.Len], what); err != nil {
				return err
			}
		} else if err := writePacket(fd, data[:c.Len], what); err != nil {
			return err
		}
		data = data[c.Len:]
	}
	if len(data) != 0 {
		return fmt.Errorf("image is inconsistent: %s: %d saved bytes in no chunk", what, len(data))
	}
	return nil
}

// writePacket writes one packet into a packet-mode pipe without blocking.
func writePacket(fd int, b []byte, what string) error {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return err
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl|unix.O_NONBLOCK); err != nil {
		return err
	}
	n, err := unix.Write(fd, b)
	if err == nil && n != len(b) {
		err = fmt.Errorf("short write (%d bytes)", n)
	}
	if err != nil {
		return fmt.Errorf("fill %s with a saved packet of %d bytes: %w", what, len(b), err)
	}
	return nil
}

// fillNonblock writes data into a pipe without ever blocking: data that
// does not fit is an error, not a hang.
func fillNonblock(fd int, data []byte, what string) error {
	if len(data) == 0 {
		return nil
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return err
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl|unix.O_NONBLOCK); err != nil {
		return err
	}
	defer unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl)
	for len(data) > 0 {
		n, err := unix.Write(fd, data)
		if err != nil {
			return fmt.Errorf("fill %s with its %d saved bytes: %w", what, len(data), err)
		}
		data = data[n:]
	}
	return nil
}

func peekPipe(pid, fd int, packets bool) ([]byte, int, []image.PipeChunk, error) {
	src, err := CopyFd(pid, fd)
	if err != nil {
		return nil, 0, nil, err
	}
	defer unix.Close(src)
	return peek(src, packets)
}

func peek(src int, packets bool) ([]byte, int, []image.PipeChunk, error) {
	if packets {
		return teePackets(src)
	}
	data, size, err := teePipe(src)
	return data, size, nil, err
}

// teePipe copies what sits in the pipe src without consuming it.
func teePipe(src int) ([]byte, int, error) {
	r, size, err := teeCopy(src)
	if err != nil || r < 0 {
		return nil, size, err
	}
	defer unix.Close(r)
	buf := make([]byte, size)
	var data []byte
	for {
		n, err := unix.Read(r, buf)
		if errors.Is(err, unix.EAGAIN) || n == 0 {
			return data, size, nil
		}
		if err != nil {
			return nil, 0, err
		}
		data = append(data, buf[:n]...)
	}
}

// teeCopy copies the contents of the pipe src, without consuming them, into
// a pipe of our own (tee(2) shares the pipe buffers, keeping their packet
// flags) and returns that pipe's non-blocking read end (-1: src is empty)
// and src's capacity.
func teeCopy(src int) (int, int, error) {
	size, err := unix.FcntlInt(uintptr(src), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		return -1, 0, err
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return -1, 0, err
	}
	defer unix.Close(p[1])
	if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, size); err != nil {
		unix.Close(p[0])
		return -1, 0, err
	}
	if _, err := unix.Tee(src, p[1], size, unix.SPLICE_F_NONBLOCK); err != nil {
		unix.Close(p[0])
		if errors.Is(err, unix.EAGAIN) {
			return -1, size, nil // empty
		}
		return -1, 0, err
	}
	return p[0], size, nil
}

// teePackets copies the contents of a pipe that may hold packets (pipe(7),
// O_DIRECT), with their boundaries, without consuming them. A read returns
// the stream bytes up to and including the next packet (pipe_read in
// fs/pipe.c stops after a packet buffer, and drops what of it does not fit),
// so one copy, read with whole-capacity reads, gives the contents cut at
// packet ends; a second copy, read one byte at a time while FIONREAD tells
// how much each read took, tells a packet (the whole of it goes) from stream
// bytes (one goes).
func teePackets(src int) ([]byte, int, []image.PipeChunk, error) {
	a, size, err := teeCopy(src)
	if err != nil || a < 0 {
		return nil, size, nil, err
	}
	defer unix.Close(a)
	b, _, err := teeCopy(src)
	if err != nil {
		return nil, 0, nil, err
	}
	if b < 0 {
		return nil, 0, nil, errors.New("the pipe emptied while being read")
	}
	defer unix.Close(b)
	// step reads one byte of b and returns how many bytes left it.
	step := func() (int, error) {
		before, err := unix.IoctlGetInt(b, fionread)
		if err != nil {
			return 0, err
		}
		var one [1]byte
		if _, err := unix.Read(b, one[:]); err != nil {
			return 0, err
		}
		after, err := unix.IoctlGetInt(b, fionread)
		return before - after, err
	}
	var data []byte
	var chunks []image.PipeChunk
	packets := false
	buf := make([]byte, size)
	for {
		n, err := unix.Read(a, buf)
		if errors.Is(err, unix.EAGAIN) || (err == nil && n == 0) {
			break
		}
		if err != nil {
			return nil, 0, nil, err
		}
		data = append(data, buf[:n]...)
		// This piece is stream bytes, then maybe one packet at its end.
		stream := 0
		for stream < n {
			took, err := step()
			if err != nil {
				return nil, 0, nil, err
			}
			if took > 1 || (took == 1 && stream == 0 && n == 1) {
				// The packet at the end (a 1-byte piece counts as one).
				if took != n-stream {
					return nil, 0, nil, fmt.Errorf("pipe packet of %d bytes where %d were expected", took, n-stream)
				}
				break
			}
			stream++
		}
		if stream > 0 {
			chunks = append(chunks, image.PipeChunk{Len: stream})
		}
		if stream < n {
			chunks = append(chunks, image.PipeChunk{Len: n - stream, Packet: true})
			packets = true
		}
	}
	if !packets {
		chunks = nil // plain stream bytes
	}
	return data, size, chunks, nil
}
