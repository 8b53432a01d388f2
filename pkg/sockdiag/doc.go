// Package sockdiag asks the kernel about sockets through NETLINK_SOCK_DIAG
// (sock_diag(7)): inet sockets (AF_INET and AF_INET6; TCP, and any other
// IPPROTO the kernel's inet_diag serves) and unix sockets, each keyed by its
// inode, the number that /proc/PID/fd/N shows as "socket:[INO]".
//
// The netlink framing (nlmsghdr, multipart dumps, NLMSG_ERROR, attribute
// alignment) is github.com/mdlayher/netlink's; the request and reply
// structures of sock_diag are ours and live in one file, messages.go, each
// with the kernel header it follows (include/uapi/linux/inet_diag.h,
// unix_diag.h, sock_diag.h, tcp.h).
//
// Every function dumps one family in the caller's network namespace; there
// is no filter by inode in the kernel, so a lookup dumps the family and
// picks. A dump costs about 1 ms here (the first one in a process ~60 ms).
//
// Errors name the request ("sock_diag inet family 10: ...") and wrap the
// kernel's errno (*netlink.OpError unwraps to it).
package sockdiag
