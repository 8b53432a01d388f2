/*
 * bigmem: a large private anonymous mapping for dump benchmarks.
 *   bigmem WORKDIR MIB: mmaps MIB MiB (default 256), fills every page with a
 *   pattern (non-zero data, so every page is present and saved), prints
 *   READY and sleeps in the standard loop.  Verification samples one word
 *   per page.
 */
#include "fixture.h"
#include <sys/mman.h>

#define PAGE 4096UL
enum { SEED_BIG = 11 };

static unsigned char *big;
static size_t big_len;

static void verify(void)
{
	for (size_t off = 0; off < big_len; off += PAGE) {
		uint64_t w = *(volatile uint64_t *)(big + off);
		if (w != pattern(off, SEED_BIG)) {
			CHECK(0, "page at +%zu differs", off);
			return;
		}
	}
}

int main(int argc, char **argv)
{
	long mib = argc > 2 ? atol(argv[2]) : 256;

	fixture_init(argc, argv);
	if (mib <= 0)
		die("bad size %ld", mib);
	big_len = (size_t)mib << 20;
	big = mmap(NULL, big_len, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (big == MAP_FAILED)
		die("mmap %ld MiB", mib);
	fill_pattern(big, big_len, SEED_BIG);

	out("READY big=%p big_len=%zu counter=%p\n", (void *)big, big_len,
	    (void *)&counter);
	fixture_loop(verify, 50);
}
