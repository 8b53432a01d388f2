/*
 * pipe: kernel objects private to the process: a pipe (both ends, with
 * "hello pipe" waiting in it, read end non-blocking), an eventfd (counter 5,
 * non-blocking) and an epoll instance watching both.  The pipe's read end
 * was registered through a dup that was then closed, so epoll's own record
 * names an fd number that no longer exists.  A check reads the pipe and the
 * counter and puts them back, and asks epoll which fds are ready.
 */
#include "fixture.h"
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>

static int p[2], efd, ep;

static void verify(void)
{
	char buf[64];
	uint64_t v = 0;
	struct epoll_event evs[4];

	int n = epoll_wait(ep, evs, 4, 0);
	int saw_pipe = 0, saw_efd = 0;
	for (int i = 0; i < n; i++) {
		saw_pipe |= evs[i].data.u64 == 0x1111 && (evs[i].events & EPOLLIN);
		saw_efd |= evs[i].data.u64 == 0x2222 && (evs[i].events & EPOLLIN);
	}
	CHECK(n == 2 && saw_pipe && saw_efd, "epoll_wait: %d ready (pipe %d, eventfd %d)", n, saw_pipe, saw_efd);
	ssize_t r = read(p[0], buf, sizeof(buf));
	CHECK(r == 10 && memcmp(buf, "hello pipe", 10) == 0, "pipe held %zd bytes", r);
	if (r > 0)
		write(p[1], buf, (size_t)r);
	CHECK((fcntl(p[0], F_GETFL) & O_NONBLOCK) && !(fcntl(p[1], F_GETFL) & O_NONBLOCK), "pipe flags");
	CHECK(read(efd, &v, 8) == 8 && v == 5, "eventfd counter %llu", (unsigned long long)v);
	v = 5;
	write(efd, &v, 8);
	CHECK(fcntl(efd, F_GETFL) & O_NONBLOCK, "eventfd flags");
}

int main(int argc, char **argv)
{
	struct epoll_event ev;
	uint64_t v = 5;

	fixture_init(argc, argv);
	if (pipe(p))
		die("pipe");
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	if (write(p[1], "hello pipe", 10) != 10)
		die("write");
	efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (efd < 0 || write(efd, &v, 8) != 8)
		die("eventfd");
	ep = epoll_create1(EPOLL_CLOEXEC);
	int d = dup(p[0]);
	ev.events = EPOLLIN;
	ev.data.u64 = 0x1111;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, d, &ev))
		die("epoll_ctl");
	close(d);
	ev.data.u64 = 0x2222;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev))
		die("epoll_ctl");
	out("READY pipe_r=%d pipe_w=%d eventfd=%d epoll=%d counter=%p\n", p[0], p[1], efd, ep,
	    (void *)&counter);
	fixture_loop(verify, 5);
}
