package image_test

import (
	"strings"
	"testing"

	"github.com/cr-tools/cr/pkg/image"
)

func goodConn() *image.InetSocket {
	return &image.InetSocket{
		Ino: 7, Family: image.AFInet6, Protocol: image.IPProtoTCP, State: image.TCPEstablished,
		Local: "[::ffff:127.0.0.1]:8080", Remote: "[::ffff:127.0.0.1]:40000",
		Options: image.InetOptions{NoDelay: true, TClass: 4},
		TCP: &image.TCPStream{InqSeq: 1000, RecvQueue: []byte("abc"), OutqSeq: 5, SendQueue: []byte("xy"), Unsent: 1,
			OptMask: 7, MSS: 65483, SndWscale: 7, RcvWscale: 7, Timestamp: 99,
			Window: &image.TCPWindow{SndWl1: 900, SndWnd: 65535, MaxWindow: 65535, RcvWnd: 65535, RcvWup: 1000, Size: 20}},
	}
}

// TestInetValidate: a sound record passes, each broken field is rejected.
func TestInetValidate(t *testing.T) {
	if err := goodConn().Validate(); err != nil {
		t.Fatalf("sound record rejected: %v", err)
	}
	l := &image.InetSocket{Family: image.AFInet, Protocol: image.IPProtoTCP, State: image.TCPListen, Local: "0.0.0.0:80", Backlog: 128}
	if err := l.Validate(); err != nil {
		t.Fatalf("sound listener rejected: %v", err)
	}
	if d := goodConn().Describe(); !strings.Contains(d, "ESTABLISHED [::ffff:127.0.0.1]:8080 -> [::ffff:127.0.0.1]:40000 recv-q 3 send-q 2 (1 unsent)") {
		t.Errorf("Describe: %q", d)
	}
	for name, breakIt := range map[string]func(s *image.InetSocket){
		"family":       func(s *image.InetSocket) { s.Family = 1 },
		"protocol":     func(s *image.InetSocket) { s.Protocol = 17 },
		"state":        func(s *image.InetSocket) { s.State = 4 },
		"local":        func(s *image.InetSocket) { s.Local = "nonsense" },
		"v4 in v6":     func(s *image.InetSocket) { s.Local = "127.0.0.1:8080" },
		"port 0":       func(s *image.InetSocket) { s.Remote = "[::ffff:127.0.0.1]:0" },
		"mixed":        func(s *image.InetSocket) { s.Remote = "[::1]:4" },
		"no stream":    func(s *image.InetSocket) { s.TCP = nil },
		"shutdown":     func(s *image.InetSocket) { s.Shutdown = 2 },
		"unsent":       func(s *image.InetSocket) { s.TCP.Unsent = 3 },
		"mss":          func(s *image.InetSocket) { s.TCP.MSS = 0 },
		"wscale":       func(s *image.InetSocket) { s.TCP.SndWscale = 15 },
		"opt mask":     func(s *image.InetSocket) { s.TCP.OptMask = 0x40 },
		"window size":  func(s *image.InetSocket) { s.TCP.Window.Size = 24 },
		"rcv_wup":      func(s *image.InetSocket) { s.TCP.Window.RcvWup = 1001 },
		"keepcnt":      func(s *image.InetSocket) { s.Options.KeepCnt = 128 },
		"tos":          func(s *image.InetSocket) { s.Options.TOS = 256 },
		"congestion":   func(s *image.InetSocket) { s.Options.Congestion = "../x" },
		"device":       func(s *image.InetSocket) { s.Options.BindToDevice = strings.Repeat("e", 16) },
		"sndbuf":       func(s *image.InetSocket) { s.Options.SndBuf = -1 },
		"listen+peer":  func(s *image.InetSocket) { s.State = image.TCPListen },
		"linger":       func(s *image.InetSocket) { s.Options.Linger = &image.InetLinger{Seconds: -1} },
		"v6 opt on v4": func(s *image.InetSocket) { s.Family, s.Local, s.Remote = image.AFInet, "1.2.3.4:5", "1.2.3.4:6" },
	} {
		s := goodConn()
		breakIt(s)
		if err := s.Validate(); err == nil {
			t.Errorf("%s: broken record accepted", name)
		}
	}
}
