/*
 * counter: the demo program.  Prints "count N" (N = 1, 2, ...) every 100 ms
 * and answers SIGUSR1/SIGUSR2 per the fixture protocol.  `counter` counts
 * loop wake-ups (every period and every check), so it strictly increases
 * between checks; `count` is the printed number.
 */
#include "fixture.h"

static volatile unsigned long count;

static void verify(void)
{
	CHECK(count > 0, "count is zero");
}

static void maybe_check(void)
{
	counter++;
	if (check_flag) {
		check_flag = 0;
		verify();
		report();
	}
}

int main(int argc, char **argv)
{
	fixture_init(argc, argv);
	out("READY counter=%p count=%p period_ms=100\n", (void *)&counter,
	    (void *)&count);
	for (;;) {
		struct timespec ts = { 0, 100 * 1000000L };

		count++;
		out("count %lu\n", count);
		/* Sleep the full period even when signals interrupt it. */
		while (nanosleep(&ts, &ts) && errno == EINTR)
			maybe_check();
		maybe_check();
	}
}
