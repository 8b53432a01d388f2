/*
 * tiny: the smallest fixture following the protocol, for round-trip
 * benchmarks.  Single-threaded; the main loop sleeps 5 ms per iteration and
 * the verification only checks that the counter moved.
 *
 * READY counter=0xADDR
 */
#include "fixture.h"

static unsigned long last;

static void verify(void)
{
	CHECK(counter > last, "counter did not move (%lu, last check %lu)", counter, last);
	last = counter;
}

int main(int argc, char **argv)
{
	fixture_init(argc, argv);
	out("READY counter=%p\n", (void *)&counter);
	fixture_loop(verify, 5);
}
