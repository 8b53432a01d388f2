/*
 * fdcases: one kind of fd state per mode (argv[2]), for the fd tests:
 *
 *   procself   fds on /proc/self/stat, /proc/thread-self/status (main
 *              thread), /proc/self (a directory) and /proc/meminfo, cwd
 *              /proc/self. A check reads them and finds its own pid.
 *   procother  an fd on /proc/1/stat (a process outside the tree).
 *   packet     a packet-mode (O_DIRECT) pipe holding packets "ab" and "cd",
 *              and a FIFO switched to packet mode holding "ef" and "gh". A
 *              check reads one packet per read and writes them back.
 *   oneshot    an epoll instance with an EPOLLONESHOT|EPOLLIN entry on a
 *              pipe's read end that has fired (a byte sits unread in the
 *              pipe): disarmed. The first check only: epoll_wait reports
 *              nothing; after the writer is closed, still nothing; re-armed
 *              with EPOLL_CTL_MOD it reports the pipe at once.
 *   oneshot-empty  the same, but the byte was read: the pipe is empty.
 *   flock, posix, ofd   a lock on WORKDIR/locked (flock LOCK_EX; a POSIX
 *              write lock on bytes 10-29; an OFD read lock on the whole file).
 *   pidfd, signalfd     an fd of that kind.
 */
#include "fixture.h"
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/stat.h>

static const char *mode;
static int fds[4];
static int ep, pp[2], checks;

static void verify_procself(void)
{
	char buf[256], want[64];
	ssize_t n = pread(fds[0], buf, sizeof(buf) - 1, 0);
	buf[n > 0 ? n : 0] = 0;
	snprintf(want, sizeof(want), "%d (", getpid());
	CHECK(strncmp(buf, want, strlen(want)) == 0, "/proc/self/stat fd reads %.40s, want %s", buf, want);
	n = pread(fds[1], buf, sizeof(buf) - 1, 0);
	buf[n > 0 ? n : 0] = 0;
	CHECK(n > 0 && strncmp(buf, "Name:", 5) == 0, "/proc/thread-self/status fd reads %.40s", buf);
	int sfd = openat(fds[2], "stat", O_RDONLY);
	n = sfd >= 0 ? read(sfd, buf, sizeof(buf) - 1) : -1;
	buf[n > 0 ? n : 0] = 0;
	if (sfd >= 0)
		close(sfd);
	CHECK(strncmp(buf, want, strlen(want)) == 0, "/proc/self directory fd: stat reads %.40s", buf);
	n = pread(fds[3], buf, sizeof(buf) - 1, 0);
	buf[n > 0 ? n : 0] = 0;
	CHECK(strncmp(buf, "MemTotal:", 9) == 0, "/proc/meminfo fd reads %.40s", buf);
	n = readlink("/proc/self/cwd", buf, sizeof(buf) - 1);
	buf[n > 0 ? n : 0] = 0;
	snprintf(want, sizeof(want), "/proc/%d", getpid());
	CHECK(strcmp(buf, want) == 0, "cwd is %s, want %s", buf, want);
}

static void read_packets(int fd, const char *a, const char *b, const char *what)
{
	char buf[64];
	ssize_t r1 = read(fd, buf, sizeof(buf));
	CHECK(r1 == 2 && memcmp(buf, a, 2) == 0, "%s: first read got %zd bytes (%.*s), want %s", what, r1,
	      (int)(r1 > 0 ? r1 : 0), buf, a);
	ssize_t r2 = read(fd, buf, sizeof(buf));
	CHECK(r2 == 2 && memcmp(buf, b, 2) == 0, "%s: second read got %zd bytes, want %s", what, r2, b);
}

static void verify_packet(void)
{
	read_packets(fds[0], "ab", "cd", "pipe");
	write(fds[1], "ab", 2);
	write(fds[1], "cd", 2);
	read_packets(fds[2], "ef", "gh", "FIFO");
	write(fds[2], "ef", 2);
	write(fds[2], "gh", 2);
}

static void verify_oneshot(void)
{
	struct epoll_event evs[2];
	if (checks++ > 0)
		return; /* the first check only: it changes the state */
	int n = epoll_wait(ep, evs, 2, 0);
	CHECK(n == 0, "disarmed one-shot entry: epoll_wait reports %d events (%#x)", n, n > 0 ? evs[0].events : 0);
	close(pp[1]);
	n = epoll_wait(ep, evs, 2, 0);
	CHECK(n == 0, "disarmed one-shot entry, writer closed: epoll_wait reports %d events (%#x)", n,
	      n > 0 ? evs[0].events : 0);
	struct epoll_event ev = { .events = EPOLLIN | EPOLLONESHOT, .data.u64 = 7 };
	CHECK(epoll_ctl(ep, EPOLL_CTL_MOD, pp[0], &ev) == 0, "re-arm: %s", strerror(errno));
	n = epoll_wait(ep, evs, 2, 0);
	CHECK(n == 1 && evs[0].data.u64 == 7 && (evs[0].events & EPOLLIN), "re-armed entry: %d events", n);
}

static void verify_nothing(void)
{
}

int main(int argc, char **argv)
{
	void (*verify)(void) = verify_nothing;

	fixture_init(argc, argv);
	mode = argc > 2 ? argv[2] : "";
	if (!strcmp(mode, "procself")) {
		fds[0] = open("/proc/self/stat", O_RDONLY);
		fds[1] = open("/proc/thread-self/status", O_RDONLY);
		fds[2] = open("/proc/self", O_RDONLY | O_DIRECTORY);
		fds[3] = open("/proc/meminfo", O_RDONLY);
		if (fds[0] < 0 || fds[1] < 0 || fds[2] < 0 || fds[3] < 0 || chdir("/proc/self"))
			die("procfs");
		verify = verify_procself;
	} else if (!strcmp(mode, "procother")) {
		if ((fds[0] = open("/proc/1/stat", O_RDONLY)) < 0)
			die("open /proc/1/stat");
	} else if (!strcmp(mode, "packet")) {
		int p[2];
		if (pipe2(p, O_DIRECT) || write(p[1], "ab", 2) != 2 || write(p[1], "cd", 2) != 2)
			die("packet pipe");
		fds[0] = p[0];
		fds[1] = p[1];
		if (mkfifo(wpath("fifo"), 0600))
			die("mkfifo");
		fds[2] = open(wpath("fifo"), O_RDWR | O_NONBLOCK);
		if (fds[2] < 0 || fcntl(fds[2], F_SETFL, O_DIRECT | O_NONBLOCK) || write(fds[2], "ef", 2) != 2 ||
		    write(fds[2], "gh", 2) != 2)
			die("packet FIFO");
		verify = verify_packet;
	} else if (!strcmp(mode, "oneshot") || !strcmp(mode, "oneshot-empty")) {
		struct epoll_event ev = { .events = EPOLLIN | EPOLLONESHOT, .data.u64 = 7 }, out[2];
		char c;
		ep = epoll_create1(0);
		if (ep < 0 || pipe(pp) || epoll_ctl(ep, EPOLL_CTL_ADD, pp[0], &ev) || write(pp[1], "x", 1) != 1)
			die("epoll");
		if (epoll_wait(ep, out, 2, 0) != 1)
			die("epoll_wait did not fire");
		if (!strcmp(mode, "oneshot-empty") && read(pp[0], &c, 1) != 1)
			die("read");
		if (!strcmp(mode, "oneshot"))
			verify = verify_oneshot;
	} else if (!strcmp(mode, "flock") || !strcmp(mode, "posix") || !strcmp(mode, "ofd")) {
		fds[0] = open(wpath("locked"), O_RDWR | O_CREAT, 0600);
		if (fds[0] < 0)
			die("open");
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 10, .l_len = 20 };
		struct flock fo = { .l_type = F_RDLCK, .l_whence = SEEK_SET };
		if ((!strcmp(mode, "flock") && flock(fds[0], LOCK_EX)) ||
		    (!strcmp(mode, "posix") && fcntl(fds[0], F_SETLK, &fl)) ||
		    (!strcmp(mode, "ofd") && fcntl(fds[0], F_OFD_SETLK, &fo)))
			die("lock");
	} else if (!strcmp(mode, "pidfd")) {
		if ((fds[0] = (int)syscall(SYS_pidfd_open, getpid(), 0)) < 0)
			die("pidfd_open");
	} else if (!strcmp(mode, "signalfd")) {
		sigset_t s;
		sigemptyset(&s);
		sigaddset(&s, SIGHUP);
		if ((fds[0] = signalfd(-1, &s, 0)) < 0)
			die("signalfd");
	} else {
		die("unknown mode %s", mode);
	}
	out("READY fd=%d counter=%p\n", fds[0], (void *)&counter);
	fixture_loop(verify, 5);
}
