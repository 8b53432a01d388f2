/*
 * manyfds: a large fd table near its limit.
 *   manyfds WORKDIR LIMIT N [SPEC...]
 * sets RLIMIT_NOFILE soft = hard = LIMIT, then opens fds 3..N-1 (each its
 * own open file: /dev/null, every 7th a pipe whose two ends take two fds;
 * every odd fd close-on-exec). Each SPEC is "H" (a new /dev/zero open file
 * at fd H) or "H=S" (fd H shares fd S's open file, dup2).
 * verify: every fd is open on the same kind of file with the same
 * close-on-exec flag, pipes still connect, shared fds share their flags,
 * and the limit is LIMIT.
 */
#include "fixture.h"
#include <sys/resource.h>
#include <sys/stat.h>

#define MAXFD 65536
static struct stat st[MAXFD];
static char open_[MAXFD], isfifo[MAXFD], cloexec[MAXFD];
static int peer[MAXFD], shares[MAXFD];
static rlim_t limit;

static void record(int fd)
{
	if (fstat(fd, &st[fd]))
		die("fstat %d", fd);
	open_[fd] = 1;
	isfifo[fd] = S_ISFIFO(st[fd].st_mode);
	cloexec[fd] = (fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0;
}

static void verify(void)
{
	struct rlimit rl;
	struct stat s;
	char c;

	CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur == limit && rl.rlim_max == limit,
	      "RLIMIT_NOFILE %lu/%lu, want %lu", (unsigned long)rl.rlim_cur, (unsigned long)rl.rlim_max, (unsigned long)limit);
	for (int fd = 0; fd < MAXFD; fd++) {
		if (!open_[fd])
			continue;
		if (fstat(fd, &s)) {
			CHECK(0, "fd %d is not open", fd);
			continue;
		}
		if (isfifo[fd])
			CHECK(S_ISFIFO(s.st_mode), "fd %d is no longer a pipe", fd);
		else
			CHECK(s.st_dev == st[fd].st_dev && s.st_ino == st[fd].st_ino && s.st_rdev == st[fd].st_rdev,
			      "fd %d refers to another file", fd);
		CHECK(((fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0) == cloexec[fd], "fd %d cloexec %d", fd, !cloexec[fd]);
		if (isfifo[fd] && peer[fd] > fd) {
			CHECK(write(peer[fd], "x", 1) == 1 && read(fd, &c, 1) == 1 && c == 'x', "pipe %d/%d does not connect", fd, peer[fd]);
		}
		if (shares[fd] > 0) {
			int fl = fcntl(fd, F_GETFL);
			fcntl(shares[fd], F_SETFL, fl ^ O_NONBLOCK);
			CHECK(fcntl(fd, F_GETFL) == (fl ^ O_NONBLOCK), "fd %d does not share fd %d's open file", fd, shares[fd]);
			fcntl(shares[fd], F_SETFL, fl);
		}
	}
	int extra = open("/dev/null", O_RDONLY);
	CHECK(extra < 0 || extra < (int)limit, "opened fd %d above the limit", extra);
	if (extra >= 0)
		close(extra);
}

int main(int argc, char **argv)
{
	fixture_init(argc, argv);
	if (argc < 4)
		die("usage: manyfds WORKDIR LIMIT N [SPEC...]");
	limit = strtoul(argv[2], NULL, 0);
	int n = atoi(argv[3]);
	struct rlimit rl = { limit, limit };
	if (setrlimit(RLIMIT_NOFILE, &rl))
		die("setrlimit %lu", (unsigned long)limit);
	for (int fd = 0; fd < 3; fd++)
		record(fd);
	for (int fd = 3; fd < n;) {
		int flags = (fd & 1) ? O_CLOEXEC : 0;
		if (fd % 7 == 0 && fd + 1 < n) {
			int p[2];
			if (pipe2(p, O_NONBLOCK) || p[0] != fd)
				die("pipe at %d", fd);
			if (fd & 1)
				fcntl(p[0], F_SETFD, FD_CLOEXEC);
			else
				fcntl(p[1], F_SETFD, FD_CLOEXEC);
			peer[p[0]] = p[1];
			record(p[0]);
			record(p[1]);
			fd += 2;
			continue;
		}
		int x = open("/dev/null", O_RDWR | flags);
		if (x != fd)
			die("open /dev/null gave %d, want %d", x, fd);
		record(fd);
		fd++;
	}
	for (int i = 4; i < argc; i++) {
		int h = atoi(argv[i]);
		char *eq = strchr(argv[i], '=');
		if (eq) {
			int s = atoi(eq + 1);
			if (dup2(s, h) != h)
				die("dup2 %d %d", s, h);
			shares[h] = s;
		} else {
			int x = open("/dev/zero", O_RDONLY);
			if (x < 0 || dup2(x, h) != h)
				die("dup2 /dev/zero to %d", h);
			if (x != h)
				close(x);
		}
		record(h);
	}
	out("READY counter=%p\n", (void *)&counter);
	fixture_loop(verify, 5);
}
