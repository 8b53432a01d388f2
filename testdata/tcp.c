/*
 * tcp: TCP sockets for the checkpoint tests (pkg/restore/tcp_test.go).
 *
 *   tcp WORKDIR serve 4|6|dual [accept1] [fork]
 *       A non-blocking listener on 127.0.0.1, [::1] (IPV6_V6ONLY on) or
 *       [::] (dual stack, IPV6_V6ONLY off), port chosen by the kernel; it
 *       accepts (only the first connection with accept1, the others stay
 *       in the accept queue) and echoes what each client sends. With
 *       fork, a child shares the listener and serves too (prefork).
 *       READY port=P [child=PID]. Verify: same port, still listening,
 *       O_NONBLOCK and V6ONLY as set.
 *   tcp WORKDIR opts
 *       An IPv4 and an IPv6 listener with every option cr keeps at a
 *       non-default value; verify reads each back.
 *   tcp WORKDIR client PORT
 *       Connects to 127.0.0.1:PORT (the test, which does not read) and
 *       writes a byte pattern until the window and buffers are full, then
 *       keeps writing as room appears. READY wrote=N local=PORT. Verify:
 *       OK with the bytes written so far in the log ("WROTE n").
 *   tcp WORKDIR halfclosed PORT
 *       Connects to 127.0.0.1:PORT and shuts it down for writing.
 *   tcp WORKDIR pair
 *       Forks: the parent listens, the child connects; they play
 *       ping-pong with sequence numbers, several in flight at once. READY
 *       child=PID. Verify (parent): every answer came in order, and more
 *       came since the last verify.
 */
#include "fixture.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>

#define MAXC 2048

static int lfd = -1, port, v6only = -1;
static struct pollfd pfds[MAXC + 1];
static int nclients;

static int listener(const char *fam)
{
	int s;
	struct sockaddr_storage ss = { 0 };
	socklen_t len;
	int one = 1;

	if (!strcmp(fam, "4")) {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		s = socket(AF_INET, SOCK_STREAM, 0);
		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		len = sizeof(*a);
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		s = socket(AF_INET6, SOCK_STREAM, 0);
		v6only = !strcmp(fam, "6");
		if (setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only)))
			die("IPV6_V6ONLY");
		a->sin6_family = AF_INET6;
		a->sin6_addr = v6only ? in6addr_loopback : in6addr_any;
		len = sizeof(*a);
	}
	if (s < 0 || setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)))
		die("socket");
	if (bind(s, (struct sockaddr *)&ss, len) || listen(s, 16))
		die("bind/listen");
	len = sizeof(ss);
	getsockname(s, (struct sockaddr *)&ss, &len);
	port = ntohs(((struct sockaddr_in *)&ss)->sin_port); /* same offset in sockaddr_in6 */
	fcntl(s, F_SETFL, O_NONBLOCK);
	return s;
}

static int sockport(int s)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	if (getsockname(s, (struct sockaddr *)&ss, &len))
		return -1;
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static int getint(int s, int level, int opt)
{
	int v = -1;
	socklen_t len = sizeof(v);
	if (getsockopt(s, level, opt, &v, &len))
		return -1000;
	return v;
}

static void verify_serve(void)
{
	CHECK(sockport(lfd) == port, "listener port %d, want %d", sockport(lfd), port);
	CHECK(getint(lfd, SOL_SOCKET, SO_ACCEPTCONN) == 1, "not listening");
	CHECK(fcntl(lfd, F_GETFL) & O_NONBLOCK, "listener lost O_NONBLOCK");
	if (v6only >= 0)
		CHECK(getint(lfd, IPPROTO_IPV6, IPV6_V6ONLY) == v6only, "IPV6_V6ONLY %d, want %d",
		      getint(lfd, IPPROTO_IPV6, IPV6_V6ONLY), v6only);
}

static void serve(int argc, char **argv)
{
	int accept1 = 0, forked = 0, dupped = 0;
	pid_t child = 0;

	struct rlimit rl;

	if (argc < 4)
		die("serve 4|6|dual");
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < MAXC + 16 && rl.rlim_max >= MAXC + 16) {
		rl.rlim_cur = MAXC + 16; /* room for the benchmark's clients */
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	lfd = listener(argv[3]);
	for (int i = 4; i < argc; i++) {
		accept1 |= !strcmp(argv[i], "accept1");
		forked |= !strcmp(argv[i], "fork");
		dupped |= !strcmp(argv[i], "dup"); /* each connection held by two fds */
	}
	if (forked && (child = fork()) < 0)
		die("fork");
	if (child > 0)
		out("READY port=%d child=%d counter=%p\n", port, child, (void *)&counter);
	else if (!forked)
		out("READY port=%d counter=%p\n", port, (void *)&counter);
	pfds[0].fd = lfd;
	pfds[0].events = POLLIN;
	for (;;) {
		counter++;
		if (check_flag) {
			check_flag = 0;
			verify_serve();
			report();
		}
		if (poll(pfds, (nfds_t)nclients + 1, 5) <= 0)
			continue;
		if (pfds[0].revents & POLLIN) {
			int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
			if (accept1)
				pfds[0].events = 0; /* the next ones wait in the queue */
			if (c >= 0 && dupped && dup(c) < 0)
				die("dup");
			if (c >= 0 && nclients < MAXC) {
				pfds[++nclients].fd = c;
				pfds[nclients].events = POLLIN;
			} else if (c >= 0)
				close(c);
		}
		for (int i = 1; i <= nclients; i++) {
			char buf[65536];
			ssize_t n;
			if (!(pfds[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			n = read(pfds[i].fd, buf, sizeof(buf));
			if (n > 0) {
				/* Echo all of it (blocking briefly if the peer is slow). */
				for (ssize_t off = 0; off < n;) {
					ssize_t w = write(pfds[i].fd, buf + off, (size_t)(n - off));
					if (w > 0)
						off += w;
					else if (errno == EAGAIN)
						poll(&(struct pollfd){ .fd = pfds[i].fd, .events = POLLOUT }, 1, 100);
					else
						break;
				}
			} else if (n == 0 || errno != EAGAIN) {
				close(pfds[i].fd);
				pfds[i] = pfds[nclients--];
				i--;
			}
		}
	}
}

/* The options set in opts mode, and read back by verify_opts. */
struct opt {
	const char *name;
	int level, opt, val, want; /* want: the value read back */
	int family;                /* 0 both, else only on that family */
};

static const struct opt opts[] = {
	{ "SO_REUSEADDR", SOL_SOCKET, SO_REUSEADDR, 1, 1, 0 },
	{ "SO_REUSEPORT", SOL_SOCKET, SO_REUSEPORT, 1, 1, 0 },
	{ "SO_KEEPALIVE", SOL_SOCKET, SO_KEEPALIVE, 1, 1, 0 },
	{ "TCP_KEEPIDLE", IPPROTO_TCP, TCP_KEEPIDLE, 77, 77, 0 },
	{ "TCP_KEEPINTVL", IPPROTO_TCP, TCP_KEEPINTVL, 13, 13, 0 },
	{ "TCP_KEEPCNT", IPPROTO_TCP, TCP_KEEPCNT, 4, 4, 0 },
	{ "TCP_NODELAY", IPPROTO_TCP, TCP_NODELAY, 1, 1, 0 },
	{ "TCP_CORK", IPPROTO_TCP, TCP_CORK, 1, 1, 0 },
	{ "TCP_DEFER_ACCEPT", IPPROTO_TCP, TCP_DEFER_ACCEPT, 7, 7, 0 },
	{ "TCP_FASTOPEN", IPPROTO_TCP, TCP_FASTOPEN, 16, 16, 0 },
	{ "TCP_USER_TIMEOUT", IPPROTO_TCP, TCP_USER_TIMEOUT, 4321, 4321, 0 },
	{ "SO_RCVBUF", SOL_SOCKET, SO_RCVBUF, 100000, 200000, 0 },
	{ "SO_SNDBUF", SOL_SOCKET, SO_SNDBUF, 120000, 240000, 0 },
	{ "SO_RCVLOWAT", SOL_SOCKET, SO_RCVLOWAT, 3, 3, 0 },
	{ "SO_MARK", SOL_SOCKET, SO_MARK, 0x42, 0x42, 0 },
	{ "IP_TOS", IPPROTO_IP, IP_TOS, 0x10, 0x10, AF_INET }, /* sets the priority too: before it */
	{ "SO_PRIORITY", SOL_SOCKET, SO_PRIORITY, 5, 5, 0 },
	{ "IP_FREEBIND", IPPROTO_IP, IP_FREEBIND, 1, 1, AF_INET },
	{ "IP_TRANSPARENT", IPPROTO_IP, IP_TRANSPARENT, 1, 1, AF_INET },
	{ "IPV6_TCLASS", IPPROTO_IPV6, IPV6_TCLASS, 0x20, 0x20, AF_INET6 },
	{ "IPV6_V6ONLY", IPPROTO_IPV6, IPV6_V6ONLY, 1, 1, AF_INET6 },
};

static int optsock[2], optfam[2] = { AF_INET, AF_INET6 }, optport[2];

static void verify_opts(void)
{
	for (int i = 0; i < 2; i++) {
		int s = optsock[i];
		struct linger l;
		socklen_t len = sizeof(l);
		char cc[16] = "", dev[16] = "";

		CHECK(sockport(s) == optport[i], "port %d, want %d", sockport(s), optport[i]);
		CHECK(getint(s, SOL_SOCKET, SO_ACCEPTCONN) == 1, "not listening");
		for (size_t j = 0; j < sizeof(opts) / sizeof(opts[0]); j++) {
			const struct opt *o = &opts[j];
			if (o->family && o->family != optfam[i])
				continue;
			int v = getint(s, o->level, o->opt);
			CHECK(v == o->want, "family %d: %s = %d, want %d", optfam[i], o->name, v, o->want);
		}
		CHECK(getsockopt(s, SOL_SOCKET, SO_LINGER, &l, &len) == 0 && l.l_onoff && l.l_linger == 9,
		      "SO_LINGER %d/%d", l.l_onoff, l.l_linger);
		len = sizeof(cc);
		getsockopt(s, IPPROTO_TCP, TCP_CONGESTION, cc, &len);
		CHECK(!strcmp(cc, "reno"), "TCP_CONGESTION %s", cc);
		len = sizeof(dev);
		getsockopt(s, SOL_SOCKET, SO_BINDTODEVICE, dev, &len);
		CHECK(!strcmp(dev, "lo"), "SO_BINDTODEVICE %s", dev);
	}
}

static void options(void)
{
	for (int i = 0; i < 2; i++) {
		int s = socket(optfam[i], SOCK_STREAM, 0);
		struct linger l = { 1, 9 };
		struct sockaddr_in a4 = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };

		if (s < 0)
			die("socket");
		for (size_t j = 0; j < sizeof(opts) / sizeof(opts[0]); j++) {
			const struct opt *o = &opts[j];
			if (o->family && o->family != optfam[i])
				continue;
			if (setsockopt(s, o->level, o->opt, &o->val, sizeof(o->val)))
				die("setsockopt %s", o->name);
		}
		if (setsockopt(s, SOL_SOCKET, SO_LINGER, &l, sizeof(l)) ||
		    setsockopt(s, IPPROTO_TCP, TCP_CONGESTION, "reno", 4) ||
		    setsockopt(s, SOL_SOCKET, SO_BINDTODEVICE, "lo", 2))
			die("setsockopt");
		if (i == 0 ? bind(s, (struct sockaddr *)&a4, sizeof(a4)) : bind(s, (struct sockaddr *)&a6, sizeof(a6)))
			die("bind");
		if (listen(s, 8))
			die("listen");
		optsock[i] = s;
		optport[i] = sockport(s);
	}
	out("READY port4=%d port6=%d counter=%p\n", optport[0], optport[1], (void *)&counter);
	fixture_loop(verify_opts, 5);
}

static int connect_to(const char *p)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int s = socket(AF_INET, SOCK_STREAM, 0);
	a.sin_port = htons((uint16_t)atoi(p));
	if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof(a)))
		die("connect %s", p);
	return s;
}

static int csock;
static uint64_t wrote;

/* Writes pattern bytes from offset wrote on, until the socket is full. */
static void fill(void)
{
	char buf[16384];
	for (;;) {
		for (size_t i = 0; i < sizeof(buf); i++)
			buf[i] = (char)((wrote + i) * 7 + ((wrote + i) >> 8));
		ssize_t n = send(csock, buf, sizeof(buf), MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n <= 0)
			return;
		wrote += (uint64_t)n;
	}
}

static void verify_client(void)
{
	CHECK(getint(csock, SOL_SOCKET, SO_ERROR) == 0, "socket error");
	out("WROTE %llu\n", (unsigned long long)wrote);
}

static void client(int argc, char **argv)
{
	if (argc < 4)
		die("client PORT");
	csock = connect_to(argv[3]);
	fill();
	usleep(100000); /* let the window fill: the test does not read */
	fill();
	out("READY wrote=%llu local=%d counter=%p\n", (unsigned long long)wrote, sockport(csock), (void *)&counter);
	for (;;) {
		counter++;
		if (check_flag) {
			check_flag = 0;
			verify_client();
			report();
		}
		fill();
		sleep_ms(5);
	}
}

static void halfclosed(int argc, char **argv)
{
	if (argc < 4)
		die("halfclosed PORT");
	csock = connect_to(argv[3]);
	if (shutdown(csock, SHUT_WR))
		die("shutdown");
	out("READY local=%d counter=%p\n", sockport(csock), (void *)&counter);
	fixture_loop(verify_client, 5);
}

static int pairsock;
static uint64_t next_send, next_recv, last_checked;

static void verify_pair(void)
{
	CHECK(next_recv > last_checked, "no answer since the last check (%llu)", (unsigned long long)next_recv);
	last_checked = next_recv;
}

static void pair(void)
{
	int sv;
	pid_t child;

	lfd = listener("4");
	fcntl(lfd, F_SETFL, 0);
	child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		char p[16];
		uint64_t v;
		close(lfd);
		snprintf(p, sizeof(p), "%d", port);
		sv = connect_to(p);
		for (;;) { /* answer every number with number + 1 */
			if (recv(sv, &v, sizeof(v), MSG_WAITALL) != sizeof(v))
				_exit(1);
			v++;
			if (send(sv, &v, sizeof(v), MSG_NOSIGNAL) != sizeof(v))
				_exit(1);
		}
	}
	pairsock = accept(lfd, NULL, NULL);
	if (pairsock < 0)
		die("accept");
	out("READY child=%d port=%d counter=%p\n", child, port, (void *)&counter);
	for (;;) {
		uint64_t v;
		counter++;
		if (check_flag) {
			check_flag = 0;
			verify_pair();
			report();
		}
		while (next_send < next_recv + 8) { /* several in flight */
			if (send(pairsock, &next_send, sizeof(next_send), MSG_NOSIGNAL) != sizeof(v))
				die("send");
			next_send++;
		}
		if (recv(pairsock, &v, sizeof(v), MSG_WAITALL) != sizeof(v)) {
			if (errno == EINTR)
				continue;
			die("recv");
		}
		CHECK(v == next_recv + 1, "answer %llu, want %llu", (unsigned long long)v, (unsigned long long)next_recv + 1);
		next_recv++;
		sleep_ms(1);
	}
}

int main(int argc, char **argv)
{
	fixture_init(argc, argv);
	if (argc < 3)
		die("mode");
	if (!strcmp(argv[2], "serve"))
		serve(argc, argv);
	else if (!strcmp(argv[2], "opts"))
		options();
	else if (!strcmp(argv[2], "client"))
		client(argc, argv);
	else if (!strcmp(argv[2], "halfclosed"))
		halfclosed(argc, argv);
	else if (!strcmp(argv[2], "pair"))
		pair();
	die("unknown mode %s", argv[2]);
}
