/*
 * Shared helpers for the checkpoint/restore test fixtures.
 *
 * Protocol (see internal/testutil):
 *   prog WORKDIR [args...]; stdout/stderr are WORKDIR/log (append mode).
 *   After setup: one line "READY key=value ... counter=0x<addr>".
 *   SIGUSR1: main loop verifies its state, writes "OK counter=N" or "FAIL what".
 *   SIGUSR2: writes "BYE counter=N" and exits 0.  SIGTERM: default action.
 *
 * This header defines globals and static functions: include it exactly once,
 * from the fixture's only translation unit.
 */
#ifndef CR_FIXTURE_H
#define CR_FIXTURE_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Non-static so that assembly code (spin_avx.c) can reference them. */
volatile unsigned long counter;
volatile sig_atomic_t check_flag;

static const char *workdir;

/* State of the current verification: the first failure wins. */
static int failed;
static char failmsg[512];

/* Close every fd >= 3 inherited from the environment. */
static __attribute__((unused)) void close_fds(void)
{
	if (syscall(SYS_close_range, 3U, ~0U, 0U) == 0)
		return;
	for (int fd = 3; fd < 65536; fd++)
		close(fd);
}

static __attribute__((unused)) void write_all(const char *s, size_t n)
{
	while (n > 0) {
		ssize_t w = write(1, s, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		s += w;
		n -= (size_t)w;
	}
}

/* printf-style unbuffered write to stdout (not async-signal-safe). */
__attribute__((unused, format(printf, 1, 2))) static void out(const char *fmt, ...)
{
	char buf[4096];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(buf))
		n = sizeof(buf) - 1;
	write_all(buf, (size_t)n);
}

/* Fatal setup error: report and exit 1. */
__attribute__((unused, format(printf, 1, 2), noreturn)) static void die(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	out("SETUP FAILED: %s (errno %d: %s)\n", buf, errno, strerror(errno));
	exit(1);
}

/* Record a verification failure (keeps only the first message). */
#define CHECK(cond, ...)                                                     \
	do {                                                                 \
		if (!(cond) && !failed) {                                    \
			failed = 1;                                          \
			snprintf(failmsg, sizeof(failmsg), __VA_ARGS__);     \
		}                                                            \
	} while (0)

/* Write OK/FAIL for the verification that just ran, and reset the state. */
static __attribute__((unused)) void report(void)
{
	if (failed)
		out("FAIL %s\n", failmsg);
	else if (counter == 0)
		out("FAIL counter is zero\n");
	else
		out("OK counter=%lu\n", counter);
	failed = 0;
	failmsg[0] = 0;
}

static void on_usr1(int sig)
{
	(void)sig;
	check_flag = 1;
}

/* Async-signal-safe: formats the counter by hand and exits. */
static void on_usr2(int sig)
{
	char buf[64] = "BYE counter=";
	char digits[24];
	unsigned long v = counter;
	int n = 0, p = (int)strlen(buf);
	(void)sig;
	do {
		digits[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n > 0)
		buf[p++] = digits[--n];
	buf[p++] = '\n';
	write_all(buf, (size_t)p);
	_exit(0);
}

/* Common start: close stray fds, remember WORKDIR, install SIGUSR1/SIGUSR2. */
static __attribute__((unused)) void fixture_init(int argc, char **argv)
{
	struct sigaction sa;

	close_fds();
	if (argc < 2) {
		out("usage: %s WORKDIR\n", argv[0]);
		exit(2);
	}
	workdir = argv[1];

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL))
		die("sigaction SIGUSR1");
	sa.sa_handler = on_usr2;
	if (sigaction(SIGUSR2, &sa, NULL))
		die("sigaction SIGUSR2");
}

/* Path inside WORKDIR (static buffer rotation: up to 4 live results). */
static __attribute__((unused)) const char *wpath(const char *name)
{
	static char bufs[4][4096];
	static int i;
	char *b = bufs[i++ & 3];
	snprintf(b, 4096, "%s/%s", workdir, name);
	return b;
}

static __attribute__((unused)) void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL); /* EINTR is fine: the loop re-checks flags */
}

/* Deterministic 64-bit pattern for byte offset off of region seed. */
static inline uint64_t pattern(uint64_t off, uint64_t seed)
{
	return (off * 2654435761ULL) ^ 0xdeadbeefULL ^ (seed << 40);
}

static __attribute__((unused)) void fill_pattern(void *p, size_t len, uint64_t seed)
{
	uint64_t *w = p;
	for (size_t i = 0; i < len / 8; i++)
		w[i] = pattern(i * 8, seed);
}

/* Returns the byte offset of the first mismatch, or -1. */
static __attribute__((unused)) long check_pattern(const void *p, size_t len, uint64_t seed)
{
	const uint64_t *w = p;
	for (size_t i = 0; i < len / 8; i++)
		if (w[i] != pattern(i * 8, seed))
			return (long)(i * 8);
	return -1;
}

/*
 * Standard main loop: increment the counter, verify on SIGUSR1, sleep
 * sleep_ms_per_iter between iterations (0 = spin).
 */
static __attribute__((unused)) void fixture_loop(void (*verify)(void), long sleep_ms_per_iter)
{
	for (;;) {
		counter++;
		if (check_flag) {
			check_flag = 0;
			failed = 0;
			verify();
			report();
		}
		if (sleep_ms_per_iter > 0)
			sleep_ms(sleep_ms_per_iter);
	}
}

#endif
