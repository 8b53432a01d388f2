package files

// kinds lists every kind of open file description cr saves. An fd belongs
// to the first kind that recognises it, so the more particular kinds come
// before the general ones (a memfd before a regular file, a terminal
// before a character device). Resolvers run in this order at the end of a
// collection, Fixers after a process's fds are in place.
var kinds = []Kind{
	pipe{},
	eventfd{},
	timerfd{},
	unixSocket{},
	epoll{},
	opath{},
	memfd{},
	mqueue{},
	regular{},
	dir{},
	tty{},
	chardev{},
	fifo{},
}
