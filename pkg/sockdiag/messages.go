package sockdiag

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// The sock_diag structures, byte by byte. Integers are host order (little
// endian on every architecture cr runs on) except ports and addresses,
// which are network order.

const (
	sizeofInetDiagReqV2 = 56 // struct inet_diag_req_v2
	sizeofInetDiagMsg   = 72 // struct inet_diag_msg
	sizeofUnixDiagReq   = 24 // struct unix_diag_req
	sizeofUnixDiagMsg   = 16 // struct unix_diag_msg

	// inetDiagNoCookie is INET_DIAG_NOCOOKIE: "no cookie" in a request.
	inetDiagNoCookie = 0xffffffff
)

// inet_diag extensions (enum in include/uapi/linux/inet_diag.h). The
// request asks for extension n with bit 1<<(n-1) of idiag_ext; only n <= 8
// fit in that u8, the others come unasked.
const (
	inetDiagMeminfo   = 1  // struct inet_diag_meminfo: 4 x u32
	inetDiagInfo      = 2  // struct tcp_info
	inetDiagCong      = 4  // NUL-terminated name of the congestion control
	inetDiagTOS       = 5  // u8
	inetDiagTClass    = 6  // u8
	inetDiagSkmeminfo = 7  // u32[SK_MEMINFO_VARS]
	inetDiagShutdown  = 8  // u8: RCV_SHUTDOWN 1 | SEND_SHUTDOWN 2
	inetDiagSkV6Only  = 11 // u8, AF_INET6 sockets (seen for listeners only)
	inetDiagMark      = 15 // u32, only when the asker has CAP_NET_ADMIN

	inetDiagAllExt = 1<<(inetDiagMeminfo-1) | 1<<(inetDiagInfo-1) | 1<<(inetDiagCong-1) |
		1<<(inetDiagTOS-1) | 1<<(inetDiagTClass-1) | 1<<(inetDiagSkmeminfo-1) | 1<<(inetDiagShutdown-1)
	// inetDiagBriefExt: the shutdown state alone (BriefTCP).
	inetDiagBriefExt = 1 << (inetDiagShutdown - 1)
)

// unix_diag request bits and reply attributes (include/uapi/linux/unix_diag.h).
const (
	udiagShowName    = 0x01
	udiagShowVFS     = 0x02
	udiagShowPeer    = 0x04
	udiagShowIcons   = 0x08
	udiagShowRQLen   = 0x10
	unixDiagName     = 0 // bytes of sun_path (abstract names start with NUL)
	unixDiagVFS      = 1 // struct unix_diag_vfs { u32 ino; u32 dev; }
	unixDiagPeer     = 2 // u32 inode of the peer
	unixDiagIcons    = 3 // u32[] inodes of connections waiting in accept()
	unixDiagRQLen    = 4 // struct unix_diag_rqlen { u32 rqueue; u32 wqueue; }
	unixDiagShutdown = 6 // u8
)

// inetDiagReq is struct inet_diag_req_v2:
//
//	u8 sdiag_family, u8 sdiag_protocol, u8 idiag_ext, u8 pad,
//	u32 idiag_states (1<<TCP_state), struct inet_diag_sockid id (48 bytes:
//	be16 sport, be16 dport, be32 src[4], be32 dst[4], u32 if, u32 cookie[2])
func inetDiagReq(family, protocol uint8, states uint32) []byte {
	return inetDiagReqExt(family, protocol, states, inetDiagAllExt)
}

// inetDiagReqExt is inetDiagReq asking for the extensions of ext only
// (bit 1<<(n-1) for extension n).
func inetDiagReqExt(family, protocol uint8, states uint32, ext uint8) []byte {
	r := make([]byte, sizeofInetDiagReqV2)
	r[0], r[1], r[2] = family, protocol, ext
	le := binary.LittleEndian
	le.PutUint32(r[4:], states)
	le.PutUint32(r[8+40:], inetDiagNoCookie)
	le.PutUint32(r[8+44:], inetDiagNoCookie)
	return r
}

// unixDiagReq is struct unix_diag_req:
//
//	u8 sdiag_family, u8 sdiag_protocol, u16 pad, u32 udiag_states,
//	u32 udiag_ino, u32 udiag_show, u32 udiag_cookie[2]
func unixDiagReq() []byte {
	r := make([]byte, sizeofUnixDiagReq)
	r[0] = unix.AF_UNIX
	le := binary.LittleEndian
	le.PutUint32(r[4:], 0xffffffff) // every state
	le.PutUint32(r[12:], udiagShowName|udiagShowVFS|udiagShowPeer|udiagShowIcons|udiagShowRQLen)
	le.PutUint32(r[16:], inetDiagNoCookie)
	le.PutUint32(r[20:], inetDiagNoCookie)
	return r
}

// attrs walks a sequence of struct rtattr / nlattr (u16 len, u16 type,
// payload, padded to 4 bytes) and calls fn for each; NLA_F_NESTED and
// NLA_F_NET_BYTEORDER are masked off the type.
func attrs(b []byte, fn func(typ uint16, v []byte)) error {
	le := binary.LittleEndian
	for len(b) >= 4 {
		l := int(le.Uint16(b))
		if l < 4 || l > len(b) {
			return errors.New("malformed attribute")
		}
		fn(le.Uint16(b[2:])&0x3fff, b[4:l])
		b = b[min((l+3)&^3, len(b)):]
	}
	return nil
}

// parseInetDiagMsg decodes struct inet_diag_msg and its attributes:
//
//	u8 family, u8 state, u8 timer, u8 retrans, struct inet_diag_sockid id,
//	u32 expires, u32 rqueue, u32 wqueue, u32 uid, u32 inode
func parseInetDiagMsg(d []byte) (InetSock, error) {
	if len(d) < sizeofInetDiagMsg {
		return InetSock{}, fmt.Errorf("short inet_diag_msg (%d bytes)", len(d))
	}
	le, be := binary.LittleEndian, binary.BigEndian
	s := InetSock{Family: d[0], State: d[1], Timer: d[2], Retrans: d[3], TOS: -1, TClass: -1, V6Only: -1}
	id := d[4:52]
	var src, dst netip.Addr
	switch s.Family {
	case unix.AF_INET:
		src, dst = netip.AddrFrom4([4]byte(id[4:8])), netip.AddrFrom4([4]byte(id[20:24]))
	case unix.AF_INET6:
		src, dst = netip.AddrFrom16([16]byte(id[4:20])), netip.AddrFrom16([16]byte(id[20:36]))
	default:
		return InetSock{}, fmt.Errorf("inet_diag_msg of family %d", s.Family)
	}
	s.Local = netip.AddrPortFrom(src, be.Uint16(id[0:]))
	s.Remote = netip.AddrPortFrom(dst, be.Uint16(id[2:]))
	s.Iface = le.Uint32(id[36:])
	s.Cookie = uint64(le.Uint32(id[40:])) | uint64(le.Uint32(id[44:]))<<32
	s.Expires, s.RQueue, s.WQueue = le.Uint32(d[52:]), le.Uint32(d[56:]), le.Uint32(d[60:])
	s.UID, s.Inode = le.Uint32(d[64:]), le.Uint32(d[68:])
	err := attrs(d[sizeofInetDiagMsg:], func(t uint16, v []byte) {
		switch {
		case t == inetDiagShutdown && len(v) >= 1:
			s.Shutdown = v[0]
		case t == inetDiagCong && len(v) >= 1:
			n := len(v)
			for i, c := range v {
				if c == 0 {
					n = i
					break
				}
			}
			s.Congestion = string(v[:n])
		case t == inetDiagTOS && len(v) >= 1:
			s.TOS = int(v[0])
		case t == inetDiagTClass && len(v) >= 1:
			s.TClass = int(v[0])
		case t == inetDiagSkV6Only && len(v) >= 1:
			s.V6Only = int(v[0])
		case t == inetDiagMark && len(v) >= 4:
			s.Mark, s.HasMark = le.Uint32(v), true
		case t == inetDiagSkmeminfo:
			s.SkMem = make([]uint32, len(v)/4)
			for i := range s.SkMem {
				s.SkMem[i] = le.Uint32(v[4*i:])
			}
		case t == inetDiagInfo:
			s.Info = append([]byte(nil), v...)
		}
	})
	if err != nil {
		return InetSock{}, err
	}
	return s, nil
}

// parseUnixDiagMsg decodes struct unix_diag_msg and its attributes:
//
//	u8 udiag_family, u8 udiag_type, u8 udiag_state, u8 pad,
//	u32 udiag_ino, u32 udiag_cookie[2]
func parseUnixDiagMsg(d []byte) (UnixSock, error) {
	if len(d) < sizeofUnixDiagMsg {
		return UnixSock{}, fmt.Errorf("short unix_diag_msg (%d bytes)", len(d))
	}
	le := binary.LittleEndian
	s := UnixSock{Type: d[1], State: d[2], Ino: le.Uint32(d[4:])}
	s.Cookie = uint64(le.Uint32(d[8:])) | uint64(le.Uint32(d[12:]))<<32
	err := attrs(d[sizeofUnixDiagMsg:], func(t uint16, v []byte) {
		switch {
		case t == unixDiagName:
			// A path comes with its terminating NUL; an abstract
			// name starts with NUL and is taken as it is.
			if len(v) > 0 && v[0] != 0 {
				for len(v) > 0 && v[len(v)-1] == 0 {
					v = v[:len(v)-1]
				}
			}
			s.Name = string(v)
		case t == unixDiagVFS && len(v) >= 8:
			s.VFS = &UnixVFS{Ino: le.Uint32(v), Dev: le.Uint32(v[4:])}
		case t == unixDiagPeer && len(v) >= 4:
			s.Peer = le.Uint32(v)
		case t == unixDiagIcons:
			s.Icons = make([]uint32, len(v)/4)
			for i := range s.Icons {
				s.Icons[i] = le.Uint32(v[4*i:])
			}
		case t == unixDiagRQLen && len(v) >= 8:
			s.RQueue, s.WQueue, s.HasRQLen = le.Uint32(v), le.Uint32(v[4:]), true
		case t == unixDiagShutdown && len(v) >= 1:
			s.Shutdown = v[0]
		}
	})
	if err != nil {
		return UnixSock{}, err
	}
	return s, nil
}

// struct tcp_info offsets (include/uapi/linux/tcp.h). x/sys/unix.TCPInfo
// treats byte 6 as padding, but it holds the window scales as bitfields.
const (
	tcpiState     = 0
	tcpiCAState   = 1
	tcpiOptions   = 5
	tcpiWscale    = 6  // tcpi_snd_wscale:4 (low nibble), tcpi_rcv_wscale:4 (high)
	tcpiRTO       = 8  // u32, µs
	tcpiSndMSS    = 16 // u32
	tcpiRcvMSS    = 20 // u32
	tcpiUnacked   = 24 // u32
	tcpiMinLength = 28
)
