/*
 * oddfiles: files that are not plain files, one kind per mode (argv[2]):
 *
 *   signalfd  a non-blocking signalfd of SIGRTMIN+1 and SIGWINCH (both
 *             blocked) with SIGRTMIN+1 (value 42) pending. A check reads it
 *             from the signalfd (then queues it again).
 *   pidfd     a child waiting for WORKDIR/childexit to exit 7; a
 *             non-blocking pidfd of it and a PIDFD_THREAD pidfd of itself.
 *             A check: the child's pidfd polls readable exactly when the
 *             file exists, and then waitid(P_PIDFD) gives status 7.
 *   inotify   watches: 1 WORKDIR (IN_CREATE), 2 WORKDIR/a (IN_MODIFY), 3
 *             removed, 4 WORKDIR/c (IN_MODIFY|IN_CLOSE_WRITE); an event
 *             queued. A check drains, writes a and c, reads wd 2 and wd 4
 *             events, and finds wd 3 gone.
 *   fanotify  a fanotify group with an inode mark on WORKDIR/a (FAN_MODIFY).
 *             A check drains, writes a and reads the event.
 *   tmpfile   an O_TMPFILE file (mode 0640) holding "hello" at 0 and "end"
 *             at 64 KiB (a hole between), offset 5.
 *   deleted   WORKDIR/data (3 pages of pattern) open twice (offsets 100 and
 *             200) and mapped MAP_SHARED, then deleted; the library argv[3]
 *             loaded with dlopen, then deleted. A check: the library's
 *             function answers, the mapping and the fds see one file.
 *   rotated   WORKDIR/app.log open O_APPEND, renamed to app.log.1 and a new one
 *             opened; WORKDIR/gone open and deleted. A check writes
 *             "check N" to each.
 *   exe       nothing more (the test runs a copy of the binary and deletes it).
 *   refuse    a userfaultfd, an io_uring, a perf_event, a BPF map, a
 *             memfd_secret (if the kernel has them), a pidfd of pid 1 and a
 *             deleted file of 2 MiB; prints which fds it opened.
 */
#include "fixture.h"
#include <dlfcn.h>
#include <poll.h>
#include <sys/fanotify.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <linux/bpf.h>
#include <linux/perf_event.h>

#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL
#endif

static const char *mode;
static int fd1, fd2, fd3, checks;
static pid_t child;
static char *map;
static int (*libfn)(int);

static void queue_sig(void)
{
	union sigval v = { .sival_int = 42 };
	if (sigqueue(getpid(), SIGRTMIN + 1, v))
		die("sigqueue");
}

static void verify_signalfd(void)
{
	struct signalfd_siginfo si;
	int fl = fcntl(fd1, F_GETFL);
	CHECK(fl & O_NONBLOCK, "signalfd lost O_NONBLOCK (flags %#o)", fl);
	ssize_t n = read(fd1, &si, sizeof(si));
	CHECK(n == sizeof(si), "signalfd read %zd (errno %d): the pending signal is gone", n, errno);
	CHECK(si.ssi_signo == (unsigned)SIGRTMIN + 1 && si.ssi_int == 42, "signalfd gave signal %u value %d",
	      si.ssi_signo, si.ssi_int);
	n = read(fd1, &si, sizeof(si));
	CHECK(n < 0 && errno == EAGAIN, "a second read got %zd", n);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGWINCH);
	sigprocmask(SIG_BLOCK, &set, NULL);
	raise(SIGWINCH);
	n = read(fd1, &si, sizeof(si));
	CHECK(n == sizeof(si) && si.ssi_signo == SIGWINCH, "SIGWINCH through the signalfd: %zd", n);
	queue_sig();
}

static void verify_pidfd(void)
{
	struct pollfd p = { .fd = fd1, .events = POLLIN };
	int exists = access(wpath("childexit"), F_OK) == 0;
	int r = poll(&p, 1, exists ? 3000 : 0);
	CHECK(r == exists, "poll on the child's pidfd gave %d, the child %s", r, exists ? "exits" : "runs");
	int fl = fcntl(fd1, F_GETFL);
	CHECK(fl & O_NONBLOCK, "pidfd lost O_NONBLOCK (flags %#o)", fl);
	fl = fcntl(fd2, F_GETFL);
	CHECK(fl & O_EXCL, "the thread pidfd lost PIDFD_THREAD (flags %#o)", fl);
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd2);
	int f = open(path, O_RDONLY);
	ssize_t n = f >= 0 ? read(f, buf, sizeof(buf) - 1) : -1;
	buf[n > 0 ? n : 0] = 0;
	close(f);
	char want[64];
	snprintf(want, sizeof(want), "Pid:\t%d\n", getpid());
	CHECK(strstr(buf, want) != NULL, "own pidfd fdinfo: %.200s", buf);
	if (exists && r == 1) {
		siginfo_t si = { 0 };
		r = waitid(P_PIDFD, fd1, &si, WEXITED);
		CHECK(r == 0 && si.si_pid == child && si.si_status == 7, "waitid on the pidfd: %d pid %d status %d",
		      r, si.si_pid, si.si_status);
	}
}

static void drain(int fd)
{
	char buf[4096];
	while (read(fd, buf, sizeof(buf)) > 0)
		;
}

static void verify_inotify(void)
{
	drain(fd1);
	int a = open(wpath("a"), O_WRONLY | O_APPEND), c = open(wpath("c"), O_WRONLY | O_APPEND);
	write(a, "x", 1);
	write(c, "y", 1);
	close(a);
	close(c);
	char buf[4096] __attribute__((aligned(8)));
	int seen2 = 0, seen4 = 0, other = 0;
	for (int tries = 0; tries < 100 && !(seen2 && seen4); tries++) {
		ssize_t n = read(fd1, buf, sizeof(buf));
		if (n <= 0) {
			sleep_ms(10);
			continue;
		}
		for (char *p = buf; p < buf + n;) {
			struct inotify_event *e = (void *)p;
			if (e->wd == 2 && (e->mask & IN_MODIFY))
				seen2 = 1;
			else if (e->wd == 4 && (e->mask & (IN_MODIFY | IN_CLOSE_WRITE)))
				seen4 = 1;
			else
				other = e->wd * 1000 + (int)e->mask;
			p += sizeof(*e) + e->len;
		}
	}
	CHECK(seen2 && seen4 && !other, "inotify events: wd 2 %d, wd 4 %d, other %d", seen2, seen4, other);
	CHECK(inotify_rm_watch(fd1, 3) < 0 && errno == EINVAL, "watch 3 exists");
	int fl = fcntl(fd1, F_GETFL);
	CHECK(fl & O_NONBLOCK, "inotify lost O_NONBLOCK");
}

static void verify_fanotify(void)
{
	drain(fd1);
	int a = open(wpath("a"), O_WRONLY | O_APPEND);
	write(a, "x", 1);
	close(a);
	char buf[4096] __attribute__((aligned(8)));
	int got = 0;
	for (int tries = 0; tries < 100 && !got; tries++) {
		ssize_t n = read(fd1, buf, sizeof(buf));
		if (n <= 0) {
			sleep_ms(10);
			continue;
		}
		for (char *p = buf; p < buf + n;) {
			struct fanotify_event_metadata *m = (void *)p;
			if ((m->mask & FAN_MODIFY) && m->pid == getpid())
				got = 1;
			if (m->fd >= 0)
				close(m->fd);
			p += m->event_len;
		}
	}
	CHECK(got, "no fanotify event for a write to a");
}

static void verify_tmpfile(void)
{
	struct stat st;
	char buf[8] = { 0 };
	fstat(fd1, &st);
	CHECK(st.st_nlink == 0 && st.st_size == 65536 + 3 && (st.st_mode & 07777) == 0640,
	      "tmpfile: nlink %lu size %ld mode %o", (unsigned long)st.st_nlink, (long)st.st_size, st.st_mode);
	CHECK(lseek(fd1, 0, SEEK_CUR) == 5, "tmpfile offset %ld", (long)lseek(fd1, 0, SEEK_CUR));
	pread(fd1, buf, 5, 0);
	CHECK(memcmp(buf, "hello", 5) == 0, "tmpfile reads %s", buf);
	pread(fd1, buf, 3, 65536);
	CHECK(memcmp(buf, "end", 3) == 0, "tmpfile end reads %s", buf);
	off_t hole = lseek(fd1, 0, SEEK_HOLE);
	CHECK(hole < 65536, "tmpfile: no hole before 64 KiB (SEEK_HOLE %ld)", (long)hole);
	lseek(fd1, 5, SEEK_SET);
	char link[64], target[512];
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd1);
	ssize_t n = readlink(link, target, sizeof(target) - 1);
	target[n > 0 ? n : 0] = 0;
	CHECK(strncmp(target, workdir, strlen(workdir)) == 0, "tmpfile is %.200s, not in %.200s", target, workdir);
}

static void verify_deleted(void)
{
	CHECK(libfn && libfn(20) == 62, "the deleted library's function gives %d", libfn ? libfn(20) : -1);
	long bad = check_pattern(map, 3 * 4096 - 8, 7);
	CHECK(bad < 0, "mapping of the deleted file differs at %ld", bad);
	CHECK(lseek(fd1, 0, SEEK_CUR) == 100 + checks * 0 && lseek(fd2, 0, SEEK_CUR) == 200,
	      "offsets %ld %ld", (long)lseek(fd1, 0, SEEK_CUR), (long)lseek(fd2, 0, SEEK_CUR));
	unsigned long v = (unsigned long)counter, got = 0;
	memcpy(map + 3 * 4096 - 8, &v, 8);
	pread(fd2, &got, 8, 3 * 4096 - 8);
	CHECK(got == v, "a write through the shared mapping is not seen by the fd (%lu, %lu)", got, v);
	struct stat st1, st2;
	fstat(fd1, &st1);
	fstat(fd2, &st2);
	CHECK(st1.st_nlink == 0 && st1.st_ino == st2.st_ino && st1.st_size == 3 * 4096,
	      "fds: nlink %lu, inodes %lu %lu, size %ld", (unsigned long)st1.st_nlink, (unsigned long)st1.st_ino,
	      (unsigned long)st2.st_ino, (long)st1.st_size);
}

static void verify_rotated(void)
{
	char line[64];
	int n = snprintf(line, sizeof(line), "check %d\n", ++checks);
	CHECK(write(fd1, line, n) == n, "write to app.log.1");
	CHECK(write(fd2, line, n) == n, "write to app.log");
	CHECK(write(fd3, line, n) == n, "write to the deleted gone");
	struct stat st;
	fstat(fd3, &st);
	CHECK(st.st_nlink == 0 && st.st_size == 6 + checks * n, "gone: nlink %lu size %ld", (unsigned long)st.st_nlink,
	      (long)st.st_size);
}

static void verify_none(void) {}

int main(int argc, char **argv)
{
	fixture_init(argc, argv);
	mode = argc > 2 ? argv[2] : "";
	void (*verify)(void) = verify_none;
	if (!strcmp(mode, "signalfd")) {
		sigset_t set;
		sigemptyset(&set);
		sigaddset(&set, SIGRTMIN + 1);
		sigaddset(&set, SIGWINCH);
		sigprocmask(SIG_BLOCK, &set, NULL);
		if ((fd1 = signalfd(-1, &set, SFD_NONBLOCK)) < 0)
			die("signalfd");
		queue_sig();
		verify = verify_signalfd;
	} else if (!strcmp(mode, "pidfd")) {
		child = fork();
		if (child == 0) {
			while (access(wpath("childexit"), F_OK))
				sleep_ms(5);
			_exit(7);
		}
		if ((fd1 = syscall(SYS_pidfd_open, child, O_NONBLOCK)) < 0 ||
		    (fd2 = syscall(SYS_pidfd_open, getpid(), PIDFD_THREAD)) < 0)
			die("pidfd_open");
		verify = verify_pidfd;
	} else if (!strcmp(mode, "inotify")) {
		close(open(wpath("a"), O_CREAT | O_WRONLY, 0644));
		close(open(wpath("b"), O_CREAT | O_WRONLY, 0644));
		close(open(wpath("c"), O_CREAT | O_WRONLY, 0644));
		fd1 = inotify_init1(IN_NONBLOCK);
		if (fd1 < 0 || inotify_add_watch(fd1, workdir, IN_CREATE) != 1 ||
		    inotify_add_watch(fd1, wpath("a"), IN_MODIFY) != 2 || inotify_add_watch(fd1, wpath("b"), IN_MODIFY) != 3 ||
		    inotify_rm_watch(fd1, 3) || inotify_add_watch(fd1, wpath("c"), IN_MODIFY | IN_CLOSE_WRITE) != 4)
			die("inotify");
		close(open(wpath("new"), O_CREAT | O_WRONLY, 0644)); /* an event left queued */
		verify = verify_inotify;
	} else if (!strcmp(mode, "fanotify")) {
		close(open(wpath("a"), O_CREAT | O_WRONLY, 0644));
		fd1 = fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK, O_RDONLY);
		if (fd1 < 0) {
			out("SETUP FAILED: fanotify_init unsupported (errno %d)\n", errno);
			exit(3);
		}
		if (fanotify_mark(fd1, FAN_MARK_ADD, FAN_MODIFY, AT_FDCWD, wpath("a")))
			die("fanotify_mark");
		verify = verify_fanotify;
	} else if (!strcmp(mode, "tmpfile")) {
		umask(0);
		if ((fd1 = open(workdir, O_TMPFILE | O_RDWR, 0640)) < 0)
			die("O_TMPFILE");
		if (pwrite(fd1, "hello", 5, 0) != 5 || pwrite(fd1, "end", 3, 65536) != 3 || lseek(fd1, 5, SEEK_SET) != 5)
			die("tmpfile write");
		verify = verify_tmpfile;
	} else if (!strcmp(mode, "deleted")) {
		if ((fd1 = open(wpath("data"), O_RDWR | O_CREAT, 0600)) < 0 || (fd2 = open(wpath("data"), O_RDONLY)) < 0)
			die("data");
		if (ftruncate(fd1, 3 * 4096))
			die("ftruncate");
		map = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd1, 0);
		if (map == MAP_FAILED)
			die("mmap");
		fill_pattern(map, 3 * 4096, 7);
		lseek(fd1, 100, SEEK_SET);
		lseek(fd2, 200, SEEK_SET);
		void *h = dlopen(argv[3], RTLD_NOW);
		if (!h || !(libfn = (int (*)(int))dlsym(h, "answer")))
			die("dlopen %s: %s", argv[3], dlerror());
		if (unlink(wpath("data")) || unlink(argv[3]))
			die("unlink");
		verify = verify_deleted;
	} else if (!strcmp(mode, "rotated")) {
		if ((fd1 = open(wpath("app.log"), O_WRONLY | O_CREAT | O_APPEND, 0644)) < 0 || write(fd1, "first\n", 6) != 6)
			die("log");
		if (rename(wpath("app.log"), wpath("app.log.1")) || (fd2 = open(wpath("app.log"), O_WRONLY | O_CREAT | O_APPEND, 0644)) < 0)
			die("rotate");
		if ((fd3 = open(wpath("gone"), O_WRONLY | O_CREAT | O_APPEND, 0644)) < 0 || write(fd3, "gone!\n", 6) != 6 ||
		    unlink(wpath("gone")))
			die("gone");
		verify = verify_rotated;
	} else if (!strcmp(mode, "refuse")) {
		char opened[256] = "";
		int fd = syscall(SYS_userfaultfd, O_CLOEXEC | 1 /* UFFD_USER_MODE_ONLY */);
		if (fd >= 0)
			snprintf(opened + strlen(opened), 32, " uffd=%d", fd);
		char params[120] = { 0 };
		fd = syscall(425 /* io_uring_setup */, 4, params);
		if (fd >= 0)
			snprintf(opened + strlen(opened), 32, " uring=%d", fd);
		struct perf_event_attr pa = { .type = PERF_TYPE_SOFTWARE, .size = sizeof(pa), .config = PERF_COUNT_SW_TASK_CLOCK, .disabled = 1, .exclude_kernel = 1 };
		fd = syscall(SYS_perf_event_open, &pa, 0, -1, -1, 0);
		if (fd >= 0)
			snprintf(opened + strlen(opened), 32, " perf=%d", fd);
		union bpf_attr ba = { .map_type = BPF_MAP_TYPE_ARRAY, .key_size = 4, .value_size = 4, .max_entries = 1 };
		fd = syscall(SYS_bpf, BPF_MAP_CREATE, &ba, sizeof(ba));
		if (fd >= 0)
			snprintf(opened + strlen(opened), 32, " bpfmap=%d", fd);
		fd = syscall(447 /* memfd_secret */, 0);
		if (fd >= 0)
			snprintf(opened + strlen(opened), 32, " secret=%d", fd);
		fd = syscall(SYS_pidfd_open, 1, 0);
		if (fd >= 0)
			snprintf(opened + strlen(opened), 32, " pidfd1=%d", fd);
		fd = open(wpath("big"), O_RDWR | O_CREAT, 0600);
		if (fd < 0 || ftruncate(fd, 2 << 20) || unlink(wpath("big")))
			die("big");
		snprintf(opened + strlen(opened), 32, " big=%d", fd);
		out("READY%s counter=%p\n", opened, (void *)&counter);
		fixture_loop(verify, 5);
	}
	out("READY counter=%p\n", (void *)&counter);
	fixture_loop(verify, 5);
}
