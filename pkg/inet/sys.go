package inet

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Values of include/uapi/linux/tcp.h that x/sys/unix lacks.
const (
	tcpNoQueue   = 0 // TCP_NO_QUEUE
	tcpRecvQueue = 1 // TCP_RECV_QUEUE
	tcpSendQueue = 2 // TCP_SEND_QUEUE

	tcpInfoLen    = 512 // more than struct tcp_info on any kernel so far (280 on 6.18)
	tcpWindowSize = 20  // struct tcp_repair_window on 6.18
)

// getsockoptRaw is getsockopt(2) into b; it returns the length the kernel
// wrote (optlen). A zero-length b asks with optlen 0.
func getsockoptRaw(fd, level, opt int, b []byte) (int, error) {
	var one [1]byte
	p := unsafe.Pointer(&one[0])
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	l := uint32(len(b))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(p), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return 0, e
	}
	return int(l), nil
}

// setsockoptRaw is setsockopt(2) with the bytes of b.
func setsockoptRaw(fd, level, opt int, b []byte) error {
	_, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), 0)
	if e != 0 {
		return e
	}
	return nil
}

// sysctls are the system defaults some options fall back to when the
// program did not set them: getsockopt then reads the sysctl's value.
type sysctls struct {
	keepIdle, keepIntvl, keepCnt int
	congestion                   string
	synRetries, finTimeout       int
	ipTTL, hopLimit              int
	noPMTUDisc                   int
	busyRead                     int
}

var systemDefaults = sync.OnceValues(func() (*sysctls, error) {
	var s sysctls
	var err error
	num := func(path string) int {
		b, e := os.ReadFile("/proc/sys/net/" + path)
		if e != nil {
			if err == nil {
				err = fmt.Errorf("read system default: %w", e)
			}
			return 0
		}
		n, e := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if e != nil && err == nil {
			err = fmt.Errorf("read system default /proc/sys/net/%s: %w", path, e)
		}
		return int(n)
	}
	s.keepIdle = num("ipv4/tcp_keepalive_time")
	s.keepIntvl = num("ipv4/tcp_keepalive_intvl")
	s.keepCnt = num("ipv4/tcp_keepalive_probes")
	s.synRetries = num("ipv4/tcp_syn_retries")
	s.finTimeout = num("ipv4/tcp_fin_timeout")
	s.ipTTL = num("ipv4/ip_default_ttl")
	s.hopLimit = num("ipv6/conf/all/hop_limit")
	s.noPMTUDisc = num("ipv4/ip_no_pmtu_disc")
	s.busyRead = num("core/busy_read")
	b, e := os.ReadFile("/proc/sys/net/ipv4/tcp_congestion_control")
	if e != nil && err == nil {
		err = fmt.Errorf("read system default: %w", e)
	}
	s.congestion = strings.TrimSpace(string(b))
	return &s, err
})
