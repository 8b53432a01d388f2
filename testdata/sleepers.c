/*
 * sleepers: one thread per kind of timed wait, all started together, each
 * for MS milliseconds (argv[2], default 2000), so that a dump catches every
 * one of them inside its syscall.  The main thread itself calls sleep().
 *
 * Each call, when it returns, writes
 *   DONE name r=RESULT errno=E start=NS end=NS
 * (CLOCK_MONOTONIC nanoseconds around the call); when all are done the
 * program writes ALLDONE and exits 0.
 *
 * READY ms=MS
 */
#include "fixture.h"
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <sys/select.h>

static long ms = 2000;
static int pipefd[2];
static int futex_rel, futex_abs;

static long long mono(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static struct timespec span(void)
{
	struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };
	return t;
}

static struct timespec deadline(clockid_t clk)
{
	struct timespec t;
	clock_gettime(clk, &t);
	t.tv_sec += ms / 1000;
	t.tv_nsec += (ms % 1000) * 1000000L;
	if (t.tv_nsec >= 1000000000L) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000L;
	}
	return t;
}

static long call(const char *name)
{
	struct timespec req = span(), rem = { 0, 0 }, abs;
	struct pollfd pfd = { pipefd[0], POLLIN, 0 };
	fd_set set;
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	if (!strcmp(name, "nanosleep"))
		return syscall(SYS_nanosleep, &req, &rem);
	if (!strcmp(name, "nanosleep_null"))
		return syscall(SYS_nanosleep, &req, NULL);
	if (!strcmp(name, "clock_nanosleep"))
		return syscall(SYS_clock_nanosleep, CLOCK_MONOTONIC, 0, &req, &rem);
	if (!strcmp(name, "clock_nanosleep_null"))
		return syscall(SYS_clock_nanosleep, CLOCK_REALTIME, 0, &req, NULL);
	if (!strcmp(name, "clock_nanosleep_abs")) {
		abs = deadline(CLOCK_MONOTONIC);
		return syscall(SYS_clock_nanosleep, CLOCK_MONOTONIC, TIMER_ABSTIME, &abs, NULL);
	}
	if (!strcmp(name, "poll"))
		return syscall(SYS_poll, &pfd, 1, (int)ms);
	if (!strcmp(name, "ppoll"))
		return syscall(SYS_ppoll, &pfd, 1, &req, NULL, 8);
	if (!strcmp(name, "select")) {
		FD_ZERO(&set);
		FD_SET(pipefd[0], &set);
		return syscall(SYS_select, pipefd[0] + 1, &set, NULL, NULL, &tv);
	}
	if (!strcmp(name, "futex"))
		return syscall(SYS_futex, &futex_rel, FUTEX_WAIT_PRIVATE, 0, &req, NULL, 0);
	if (!strcmp(name, "futex_abs")) {
		abs = deadline(CLOCK_MONOTONIC);
		return syscall(SYS_futex, &futex_abs, FUTEX_WAIT_BITSET_PRIVATE, 0, &abs, NULL,
			       FUTEX_BITSET_MATCH_ANY);
	}
	errno = ENOSYS;
	return -1;
}

static void *run(void *arg)
{
	const char *name = arg;
	long long start = mono();
	long r = call(name);
	int e = r < 0 ? errno : 0;
	out("DONE %s r=%ld errno=%d start=%lld end=%lld\n", name, r, e, start, mono());
	return NULL;
}

static const char *names[] = { "nanosleep", "nanosleep_null", "clock_nanosleep", "clock_nanosleep_null",
			       "clock_nanosleep_abs", "poll", "ppoll", "select", "futex", "futex_abs" };

int main(int argc, char **argv)
{
	enum { N = sizeof(names) / sizeof(names[0]) };
	pthread_t th[N];

	close_fds();
	if (argc < 2) {
		out("usage: %s WORKDIR [MS]\n", argv[0]);
		return 2;
	}
	if (argc > 2)
		ms = atol(argv[2]);
	if (pipe(pipefd))
		die("pipe");
	for (int i = 0; i < N; i++)
		if (pthread_create(&th[i], NULL, run, (void *)names[i]))
			die("pthread_create");
	out("READY ms=%ld\n", ms);
	long long start = mono();
	unsigned left = sleep((unsigned)(ms / 1000));
	out("DONE sleep r=%u errno=0 start=%lld end=%lld\n", left, start, mono());
	for (int i = 0; i < N; i++)
		pthread_join(th[i], NULL);
	out("ALLDONE\n");
	return 0;
}
