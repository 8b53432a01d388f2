package files

// kinds lists every kind of open file description cr saves. An fd belongs
// to the first kind that recognises it, so the more particular kinds come
// before the general ones (a memfd before a regular file, a terminal
// before a character device). Resolvers run in this order at the end of a
// collection, Fixers after a process's fds are in place.
var kinds = []Kind{
	pipe{},
	eventfd{},
	signalfd{},
	timerfd{},
	inotify{},
	fanotify{},
	pidfd{},
	tcpSocket{},
	unixSocket{},
	udp{},
	netlink{},
	epoll{},
	opath{},
	memfd{},
	mqueue{}, // before ghost: an unlinked queue is refused as such
	ghost{},
	regular{},
	dir{},
	pty{},
	tty{},
	chardev{},
	fifo{},
	otherSocket{}, // last: any socket no kind above takes is refused
}
