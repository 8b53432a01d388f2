/*
 * exits: prints READY, then exits with status 0 after argv[2] milliseconds
 * (default 50), counting in 1 ms sleeps.  Used to check that a target that
 * vanishes during or before a dump is handled.
 */
#include "fixture.h"

static void verify(void)
{
}

int main(int argc, char **argv)
{
	long ms = argc > 2 ? atol(argv[2]) : 50;
	struct timespec t0, now;

	fixture_init(argc, argv);
	out("READY lifetime_ms=%ld counter=%p\n", ms, (void *)&counter);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		counter++;
		if (check_flag) {
			check_flag = 0;
			verify();
			report();
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
		if ((now.tv_sec - t0.tv_sec) * 1000 +
			    (now.tv_nsec - t0.tv_nsec) / 1000000 >= ms)
			break;
		sleep_ms(1);
	}
	out("EXIT counter=%lu\n", counter);
	exit(0);
}
