/*
 * shm: memory shared between a parent (this) and its child C, and private
 * memory inherited across fork.
 *   shared: 1 MiB MAP_SHARED|MAP_ANONYMOUS; C increments a counter in it
 *           every 2 ms; the rest holds a pattern.
 *   memfd:  a 64 KiB memfd "crtest" (fd kept open, offset 100), mapped
 *           shared, with a pattern.
 *   priv:   16 MiB private anonymous memory filled before the fork, so C
 *           has the same pages (copy-on-write) and never writes them.
 * A check: C's counter in the shared memory keeps moving (the mapping is
 * shared again), every pattern is intact in P and (asked through the shared
 * memory) in C, the memfd's offset is 100 and pread through the fd agrees
 * with the mapping.
 */
#include "fixture.h"
#include <sys/mman.h>
#include <sys/prctl.h>

#define SHARED (1 << 20)
#define MEMFD (64 << 10)
#define PRIV (16 << 20)
static volatile uint64_t *shared;
static unsigned char *mem, *priv;
static int mfd;
static pid_t c;
static uint64_t last;

static void verify(void)
{
	uint64_t now = shared[0];
	CHECK(now > last, "C's counter in shared memory did not move (%llu)", (unsigned long long)now);
	last = now;
	CHECK(check_pattern((void *)(shared + 512), SHARED - 4096, 21) < 0, "shared pattern");
	CHECK(check_pattern(mem, MEMFD, 22) < 0, "memfd pattern");
	CHECK(check_pattern(priv, PRIV, 23) < 0, "private pattern");
	CHECK(lseek(mfd, 0, SEEK_CUR) == 100, "memfd offset %ld", (long)lseek(mfd, 0, SEEK_CUR));
	uint64_t w = 0;
	CHECK(pread(mfd, &w, 8, 8) == 8 && w == ((uint64_t *)mem)[1], "pread of the memfd");
	CHECK(kill(c, 0) == 0, "C is gone");
	/* Ask C to check its own copy of priv: shared[2] request, [3] ack, [4] result. */
	uint64_t req = shared[2] + 1;
	shared[2] = req;
	for (int i = 0; i < 2000 && shared[3] != req; i++)
		sleep_ms(1);
	CHECK(shared[3] == req, "C did not answer");
	CHECK(shared[4] == 0, "C's private pattern is broken");
}

int main(int argc, char **argv)
{
	fixture_init(argc, argv);
	shared = mmap(NULL, SHARED, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	mfd = memfd_create("crtest", 0);
	if (shared == MAP_FAILED || mfd < 0 || ftruncate(mfd, MEMFD))
		die("setup");
	mem = mmap(NULL, MEMFD, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	priv = mmap(NULL, PRIV, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED || priv == MAP_FAILED)
		die("mmap");
	fill_pattern((void *)(shared + 512), SHARED - 4096, 21);
	fill_pattern(mem, MEMFD, 22);
	fill_pattern(priv, PRIV, 23);
	lseek(mfd, 100, SEEK_SET);
	if ((c = fork()) == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		signal(SIGUSR1, SIG_IGN);
		signal(SIGUSR2, SIG_DFL);
		for (;;) {
			shared[0]++;
			if (shared[2] != shared[3]) {
				shared[4] = check_pattern(priv, PRIV, 23) >= 0;
				shared[3] = shared[2];
			}
			sleep_ms(2);
		}
	}
	sleep_ms(20);
	out("READY shared=%p memfd=%p priv=%p c=%d counter=%p\n", (void *)shared, (void *)mem, (void *)priv, c, (void *)&counter);
	fixture_loop(verify, 5);
}
