/*
 * fdkinds: a periodic timerfd (10 ms, non-blocking), a one-shot timerfd
 * armed for 1000 s, and a FIFO in WORKDIR opened read-write with
 * "fifo data" waiting in it plus a second, read-only non-blocking
 * description. A check reads the periodic timer's expirations (they keep
 * coming at the right rate), the one-shot's time left (less than before,
 * still counting), and the FIFO's bytes (written back afterwards).
 */
#include "fixture.h"
#include <sys/stat.h>
#include <sys/timerfd.h>

static int tick, once, fifo, fifo_ro;
static long last_left = 1001;

static void verify(void)
{
	uint64_t n = 0;
	struct itimerspec its;
	char buf[64];

	read(tick, &n, 8); /* drain */
	sleep_ms(100);
	n = 0;
	CHECK(read(tick, &n, 8) == 8 && n >= 3 && n <= 30, "periodic timerfd: %llu expirations in 100 ms",
	      (unsigned long long)n);
	timerfd_gettime(once, &its);
	CHECK(its.it_value.tv_sec > 900 && its.it_value.tv_sec < last_left, "one-shot timerfd: %lds left (last %ld)",
	      (long)its.it_value.tv_sec, last_left);
	last_left = its.it_value.tv_sec + 1;
	ssize_t r = read(fifo_ro, buf, sizeof(buf));
	CHECK(r == 9 && memcmp(buf, "fifo data", 9) == 0, "FIFO held %zd bytes", r);
	if (r > 0)
		write(fifo, buf, (size_t)r);
	CHECK(fcntl(fifo_ro, F_GETFL) & O_NONBLOCK, "FIFO flags");
}

int main(int argc, char **argv)
{
	struct itimerspec its = { { 0, 10000000 }, { 0, 10000000 } };

	fixture_init(argc, argv);
	tick = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	once = timerfd_create(CLOCK_REALTIME, 0);
	if (tick < 0 || once < 0 || timerfd_settime(tick, 0, &its, NULL))
		die("timerfd");
	struct itimerspec one = { { 0, 0 }, { 1000, 0 } };
	timerfd_settime(once, 0, &one, NULL);
	if (mkfifo(wpath("fifo"), 0600))
		die("mkfifo");
	fifo = open(wpath("fifo"), O_RDWR);
	fifo_ro = open(wpath("fifo"), O_RDONLY | O_NONBLOCK);
	if (fifo < 0 || fifo_ro < 0 || write(fifo, "fifo data", 9) != 9)
		die("fifo");
	out("READY tick=%d once=%d fifo=%d counter=%p\n", tick, once, fifo, (void *)&counter);
	fixture_loop(verify, 5);
}
