package files

import (
	"reflect"
	"strings"
	"testing"

	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

// TestTeePackets: the contents of a pipe written partly in packet mode are
// read back, without being consumed, cut into the packets and stream runs
// they were written as.
func TestTeePackets(t *testing.T) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	mode := func(direct bool) {
		fl := unix.O_NONBLOCK
		if direct {
			fl |= unix.O_DIRECT
		}
		if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETFL, fl); err != nil {
			t.Fatal(err)
		}
	}
	write := func(s string) {
		if _, err := unix.Write(p[1], []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	// A packet-mode write is merged into a stream buffer that has room
	// (pipe_write in fs/pipe.c), so packets follow a full page of stream
	// bytes or other packets.
	big := strings.Repeat("s", 4096)
	mode(false)
	write(big)
	mode(true)
	write("PQ")
	write("R")
	mode(false)
	write("xyz")
	mode(true)
	write("ST") // merged into "xyz"
	data, _, chunks, err := teePackets(p[0])
	if err != nil {
		t.Fatal(err)
	}
	want := []image.PipeChunk{{Len: 4096}, {Len: 2, Packet: true}, {Len: 1, Packet: true}, {Len: 5}}
	if string(data) != big+"PQRxyzST" || !reflect.DeepEqual(chunks, want) {
		t.Fatalf("got %d bytes %+v, want %+v", len(data), chunks, want)
	}
	// Nothing was consumed.
	n, err := unix.IoctlGetInt(p[0], fionread)
	if err != nil || n != len(data) {
		t.Fatalf("the pipe holds %d bytes (%v), want %d", n, err, len(data))
	}
	// A stream pipe has no chunks.
	var q [2]int
	unix.Pipe2(q[:], unix.O_CLOEXEC|unix.O_NONBLOCK)
	defer unix.Close(q[0])
	defer unix.Close(q[1])
	unix.Write(q[1], []byte("ab"))
	unix.Write(q[1], []byte("cd"))
	if data, _, chunks, err := teePackets(q[0]); err != nil || string(data) != "abcd" || chunks != nil {
		t.Fatalf("stream pipe: %q %+v %v", data, chunks, err)
	}
}
