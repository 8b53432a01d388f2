// Package inet saves and rebuilds AF_INET and AF_INET6 sockets: TCP
// listeners and established TCP connections (UDP later), as the records of
// image.InetSocket. It is the core the fd kind for inet sockets calls; it
// works on one socket at a time, on cr's own copy of the target's fd
// (pidfd_getfd gives one that acts on the target's socket), and never
// talks to the target process.
//
// Dump reads a socket: a listener's address, backlog and options; an
// established connection through TCP repair (TCP_REPAIR and friends, kernel
// net/ipv4/tcp.c; the sequence follows CRIU's soccr/soccr.c), which it
// leaves in repair mode so that the connection sends nothing more. The
// caller holds the network lock (pkg/netlock) around the whole dump. After
// a dump that kills the target, Release closes cr's copy silently (no FIN,
// no reset); after a failed dump or one that leaves the target running,
// Resume turns repair off again. Restore builds a socket from a record in
// cr's process and returns its fd, ready to be installed in the restored
// task; the lock must hold until every socket of the image is restored.
//
// What is refused, as a *RefusedError naming the socket: closing and
// connecting states, a half-closed connection, a listener with connections
// waiting in accept() (unless DumpOptions.SkipInFlight), and any option of
// the check list (options.go, optionChecks) at a non-default value. Other
// errors name the socket and wrap the kernel's errno. Needs CAP_NET_ADMIN
// (TCP_REPAIR, SO_*BUFFORCE, SO_MARK).
package inet
