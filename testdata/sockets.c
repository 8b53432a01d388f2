/*
 * sockets: holds the sockets of one mode (argv[2]) and checks them on
 * SIGUSR1 (the first check consumes what was queued):
 *   udp        IPv4 and IPv6 UDP servers on loopback with datagrams from
 *              three sources (ports in READY) queued
 *   unixsrv    a stream listener at WORKDIR/srv.sock, one client connected
 *              and accepted, one connection waiting in accept(), a pipe
 *              read end and a regular file in flight (SCM_RIGHTS) with data
 *   dgram      datagram and seqpacket socketpairs with messages queued, and a
 *              named abstract datagram socket with messages from a client
 *   renamed    a listener bound at WORKDIR/admin.sock.tmp, renamed to admin.sock
 *   netlink    a route netlink socket in RTMGRP_IPV4_IFADDR; the check waits
 *              for RTM_NEWADDR of 127.0.0.77
 *   extdgram P a datagram socket connected to the socket at path P (outside);
 *              the check sends "ping"
 *   extstream P a stream socket connected to the listener at path P
 *   refused    a packet socket, a raw IPv4 socket and a UDP-Lite socket
 */
#include "fixture.h"
#include <arpa/inet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <stddef.h>
#include <sys/un.h>

static const char *mode;
static int u4, u6, src4[3], src6[3];
static int lsn, cli, srv, pend, pipew;
static int dg[2], sp[2], named, ncli;
static int nl;
static unsigned nlport;
static int ext;
static char path[4096];

static int port_of(int s)
{
	struct sockaddr_storage a;
	socklen_t l = sizeof(a);
	getsockname(s, (struct sockaddr *)&a, &l);
	if (a.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&a)->sin_port);
	return ntohs(((struct sockaddr_in6 *)&a)->sin6_port);
}

static struct sockaddr_un unaddr(const char *p, socklen_t *len)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	size_t n = strlen(p);
	if (p[0] == '@') {
		memcpy(a.sun_path + 1, p + 1, n - 1);
		*len = offsetof(struct sockaddr_un, sun_path) + n;
	} else {
		memcpy(a.sun_path, p, n);
		*len = sizeof(a);
	}
	return a;
}

static int unix_bound(int type, const char *p)
{
	socklen_t l;
	struct sockaddr_un a = unaddr(p, &l);
	int s = socket(AF_UNIX, type, 0);
	if (s < 0 || bind(s, (struct sockaddr *)&a, l))
		die("bind %s", p);
	return s;
}

static int unix_connected(int type, const char *p)
{
	socklen_t l;
	struct sockaddr_un a = unaddr(p, &l);
	int s = socket(AF_UNIX, type, 0);
	if (s < 0 || connect(s, (struct sockaddr *)&a, l))
		die("connect %s", p);
	return s;
}

static void setup_udp(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	u4 = socket(AF_INET, SOCK_DGRAM, 0);
	u6 = socket(AF_INET6, SOCK_DGRAM, 0);
	if (bind(u4, (struct sockaddr *)&a, sizeof(a)) || bind(u6, (struct sockaddr *)&a6, sizeof(a6)))
		die("bind udp");
	a.sin_port = htons(port_of(u4));
	a6.sin6_port = htons(port_of(u6));
	for (int i = 0; i < 3; i++) {
		char msg[32];
		int s = socket(AF_INET, SOCK_DGRAM, 0), s6 = socket(AF_INET6, SOCK_DGRAM, 0);
		snprintf(msg, sizeof(msg), "datagram %d", i);
		if (sendto(s, msg, strlen(msg), 0, (struct sockaddr *)&a, sizeof(a)) < 0 ||
		    sendto(s6, msg, strlen(msg), 0, (struct sockaddr *)&a6, sizeof(a6)) < 0)
			die("sendto");
		src4[i] = port_of(s);
		src6[i] = port_of(s6);
		close(s);
		close(s6);
	}
	out("READY u4=%d u6=%d counter=%p\n", port_of(u4), port_of(u6), (void *)&counter);
}

static void verify_udp(void)
{
	for (int i = 0; i < 3; i++) {
		char buf[64] = { 0 }, want[32];
		struct sockaddr_in f;
		struct sockaddr_in6 f6;
		socklen_t l = sizeof(f), l6 = sizeof(f6);
		snprintf(want, sizeof(want), "datagram %d", i);
		ssize_t n = recvfrom(u4, buf, sizeof(buf) - 1, MSG_DONTWAIT, (struct sockaddr *)&f, &l);
		CHECK(n == (ssize_t)strlen(want) && !strcmp(buf, want), "udp4 datagram %d: %zd %s", i, n, buf);
		CHECK(ntohs(f.sin_port) == src4[i] && f.sin_addr.s_addr == htonl(INADDR_LOOPBACK),
		      "udp4 datagram %d from port %d, want %d", i, ntohs(f.sin_port), src4[i]);
		memset(buf, 0, sizeof(buf));
		n = recvfrom(u6, buf, sizeof(buf) - 1, MSG_DONTWAIT, (struct sockaddr *)&f6, &l6);
		CHECK(n == (ssize_t)strlen(want) && !strcmp(buf, want), "udp6 datagram %d: %zd %s", i, n, buf);
		CHECK(ntohs(f6.sin6_port) == src6[i] && IN6_IS_ADDR_LOOPBACK(&f6.sin6_addr), "udp6 datagram %d from port %d", i, ntohs(f6.sin6_port));
	}
	char b;
	CHECK(recv(u4, &b, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN, "udp4: more datagrams");
}

static void send_fds(int s, const char *data, int *fds, int n)
{
	char cbuf[CMSG_SPACE(sizeof(int) * 4)];
	struct iovec iov = { (void *)data, strlen(data) };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = CMSG_SPACE(sizeof(int) * n) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int) * n);
	memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
	if (sendmsg(s, &m, 0) < 0)
		die("sendmsg");
}

static void setup_unixsrv(void)
{
	int p[2], f;
	lsn = unix_bound(SOCK_STREAM, wpath("srv.sock"));
	if (listen(lsn, 8))
		die("listen");
	cli = unix_connected(SOCK_STREAM, wpath("srv.sock"));
	srv = accept(lsn, NULL, NULL);
	pend = unix_connected(SOCK_STREAM, wpath("srv.sock"));
	if (srv < 0 || pipe(p))
		die("accept/pipe");
	f = open(wpath("inflight.txt"), O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (f < 0 || write(f, "regular", 7) != 7 || lseek(f, 0, SEEK_SET))
		die("file");
	if (write(cli, "hello", 5) != 5)
		die("write");
	int fds[2] = { p[0], f };
	send_fds(cli, "fd!", fds, 2);
	close(p[0]);
	close(f);
	pipew = p[1];
	if (write(pipew, "piped", 5) != 5 || write(srv, "reply", 5) != 5)
		die("write");
	out("READY lsn=%d counter=%p\n", lsn, (void *)&counter);
}

static void verify_unixsrv(void)
{
	char buf[64] = { 0 }, cbuf[CMSG_SPACE(sizeof(int) * 4)];
	struct iovec iov = { buf, sizeof(buf) - 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	ssize_t n = recvmsg(srv, &m, MSG_DONTWAIT);
	CHECK(n == 8 && !memcmp(buf, "hellofd!", 8), "server read %zd bytes %s", n, buf);
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	int fds[2] = { -1, -1 };
	CHECK(c && c->cmsg_type == SCM_RIGHTS && c->cmsg_len == CMSG_LEN(2 * sizeof(int)), "no descriptors in flight");
	if (c && c->cmsg_len == CMSG_LEN(2 * sizeof(int))) {
		memcpy(fds, CMSG_DATA(c), sizeof(fds));
		memset(buf, 0, sizeof(buf));
		CHECK(read(fds[0], buf, 5) == 5 && !memcmp(buf, "piped", 5), "pipe in flight: %s", buf);
		memset(buf, 0, sizeof(buf));
		CHECK(read(fds[1], buf, 7) == 7 && !memcmp(buf, "regular", 7), "file in flight: %s", buf);
		close(fds[0]);
		close(fds[1]);
	}
	memset(buf, 0, sizeof(buf));
	CHECK(read(cli, buf, 5) == 5 && !memcmp(buf, "reply", 5), "client read %s", buf);
	struct sockaddr_un pa;
	socklen_t pl = sizeof(pa);
	CHECK(getpeername(cli, (struct sockaddr *)&pa, &pl) == 0 && !strcmp(pa.sun_path, wpath("srv.sock")), "client's peer name %s", pa.sun_path);
	int a = accept4(lsn, NULL, NULL, SOCK_NONBLOCK);
	CHECK(a >= 0, "no connection waiting in accept (errno %d)", errno);
	if (a >= 0) {
		if (write(pend, "late", 4) != 4)
			CHECK(0, "write to the pending client");
		usleep(10000);
		memset(buf, 0, sizeof(buf));
		n = read(a, buf, sizeof(buf));
		CHECK(n > 0 && strstr(buf, "late"), "accepted connection read %zd %s", n, buf);
		if (write(a, "ack", 3) == 3) {
			memset(buf, 0, sizeof(buf));
			CHECK(read(pend, buf, 3) == 3 && !strcmp(buf, "ack"), "pending client read %s", buf);
		}
		close(a);
	}
	int c2 = socket(AF_UNIX, SOCK_STREAM, 0);
	socklen_t l;
	struct sockaddr_un ad = unaddr(wpath("srv.sock"), &l);
	CHECK(connect(c2, (struct sockaddr *)&ad, l) == 0, "a new client cannot connect (errno %d)", errno);
	close(c2);
}

static void setup_dgram(void)
{
	char name[64];
	if (socketpair(AF_UNIX, SOCK_DGRAM, 0, dg) || socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sp))
		die("socketpair");
	snprintf(name, sizeof(name), "@cr-test-dgram-%d", getpid());
	named = unix_bound(SOCK_DGRAM, name);
	ncli = unix_connected(SOCK_DGRAM, name);
	const char *msgs[] = { "a", "bb", "ccc" };
	for (int i = 0; i < 3; i++)
		if (send(dg[0], msgs[i], strlen(msgs[i]), 0) < 0 || send(sp[0], msgs[i], strlen(msgs[i]), 0) < 0 ||
		    send(ncli, msgs[i], strlen(msgs[i]), 0) < 0)
			die("send");
	out("READY counter=%p\n", (void *)&counter);
}

static void verify_dgram(void)
{
	const char *msgs[] = { "a", "bb", "ccc" };
	int socks[] = { dg[1], sp[1], named };
	for (int s = 0; s < 3; s++)
		for (int i = 0; i < 3; i++) {
			char buf[16] = { 0 };
			ssize_t n = recv(socks[s], buf, sizeof(buf), MSG_DONTWAIT);
			CHECK(n == (ssize_t)strlen(msgs[i]) && !strcmp(buf, msgs[i]), "socket %d message %d: %zd %s", s, i, n, buf);
		}
	CHECK(send(ncli, "x", 1, 0) == 1, "named client send (errno %d)", errno);
	char b;
	CHECK(recv(named, &b, 1, MSG_DONTWAIT) == 1 && b == 'x', "named server did not get the new message");
}

static void setup_renamed(void)
{
	lsn = unix_bound(SOCK_STREAM, wpath("admin.sock.tmp"));
	if (listen(lsn, 8) || rename(wpath("admin.sock.tmp"), wpath("admin.sock")))
		die("listen/rename");
	out("READY counter=%p\n", (void *)&counter);
}

static void verify_renamed(void)
{
	int c = unix_connected(SOCK_STREAM, wpath("admin.sock"));
	int a = accept(lsn, NULL, NULL);
	CHECK(a >= 0 && write(c, "q", 1) == 1, "accept");
	char b = 0;
	CHECK(read(a, &b, 1) == 1 && b == 'q', "read");
	close(a);
	close(c);
}

static void setup_netlink(void)
{
	struct sockaddr_nl a = { .nl_family = AF_NETLINK, .nl_groups = RTMGRP_IPV4_IFADDR };
	socklen_t l = sizeof(a);
	nl = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
	if (nl < 0 || bind(nl, (struct sockaddr *)&a, sizeof(a)) || getsockname(nl, (struct sockaddr *)&a, &l))
		die("netlink");
	nlport = a.nl_pid;
	out("READY port=%u counter=%p\n", nlport, (void *)&counter);
}

static void verify_netlink(void)
{
	struct sockaddr_nl a;
	socklen_t l = sizeof(a);
	CHECK(getsockname(nl, (struct sockaddr *)&a, &l) == 0 && a.nl_pid == nlport, "port id %u, was %u", a.nl_pid, nlport);
	int found = 0;
	for (int tries = 0; tries < 100 && !found; tries++) {
		struct pollfd p = { nl, POLLIN, 0 };
		if (poll(&p, 1, 20) <= 0)
			continue;
		char buf[8192];
		ssize_t n = recv(nl, buf, sizeof(buf), MSG_DONTWAIT);
		for (struct nlmsghdr *h = (void *)buf; n > 0 && NLMSG_OK(h, n); h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_type != RTM_NEWADDR)
				continue;
			struct ifaddrmsg *ifa = NLMSG_DATA(h);
			int rl = IFA_PAYLOAD(h);
			for (struct rtattr *r = IFA_RTA(ifa); RTA_OK(r, rl); r = RTA_NEXT(r, rl))
				if (r->rta_type == IFA_LOCAL && *(uint32_t *)RTA_DATA(r) == htonl(0x7f00004d))
					found = 1;
		}
	}
	CHECK(found, "no RTM_NEWADDR for 127.0.0.77");
}

int main(int argc, char **argv)
{
	fixture_init(argc, argv);
	mode = argc > 2 ? argv[2] : "";
	if (argc > 3)
		snprintf(path, sizeof(path), "%s", argv[3]);
	void (*verify)(void) = NULL;
	if (!strcmp(mode, "udp")) {
		setup_udp();
		verify = verify_udp;
	} else if (!strcmp(mode, "unixsrv")) {
		setup_unixsrv();
		verify = verify_unixsrv;
	} else if (!strcmp(mode, "dgram")) {
		setup_dgram();
		verify = verify_dgram;
	} else if (!strcmp(mode, "renamed")) {
		setup_renamed();
		verify = verify_renamed;
	} else if (!strcmp(mode, "netlink")) {
		setup_netlink();
		verify = verify_netlink;
	} else if (!strcmp(mode, "extdgram") || !strcmp(mode, "extstream")) {
		ext = unix_connected(!strcmp(mode, "extdgram") ? SOCK_DGRAM : SOCK_STREAM, path);
		out("READY counter=%p\n", (void *)&counter);
	} else if (!strcmp(mode, "refused")) {
		if (socket(AF_PACKET, SOCK_RAW, 0) < 0 || socket(AF_INET, SOCK_RAW, IPPROTO_ICMP) < 0 ||
		    socket(AF_INET, SOCK_DGRAM, IPPROTO_UDPLITE) < 0)
			die("sockets");
		out("READY counter=%p\n", (void *)&counter);
	} else {
		die("unknown mode %s", mode);
	}
	(void)verify;
	for (;;) {
		counter++;
		if (check_flag) {
			check_flag = 0;
			if (verify)
				verify();
			else if (ext >= 0 && !strcmp(mode, "extdgram"))
				CHECK(send(ext, "ping", 4, 0) == 4, "send to the outside peer (errno %d)", errno);
			report();
		}
		sleep_ms(5);
	}
}
