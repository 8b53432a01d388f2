/*
 * anon: private anonymous memory in three flavours, all filled with patterns:
 * an 8 MiB mmap, a 256 KiB brk-heap malloc buffer, and static .data/.bss arrays.
 */
#include "fixture.h"
#include <malloc.h>
#include <sys/mman.h>

#define ANON_LEN (8UL << 20)
#define HEAP_LEN (256UL << 10)
#define DATA_WORDS 4096
#define BSS_WORDS 32768

enum { SEED_ANON = 1, SEED_HEAP = 2, SEED_DATA = 3, SEED_BSS = 4 };

/* Non-zero initializer keeps it in .data. */
static uint64_t data_arr[DATA_WORDS] = { 1 };
static uint64_t bss_arr[BSS_WORDS];

static unsigned char *anon;
static unsigned char *heap;

static void verify(void)
{
	long off;

	off = check_pattern(anon, ANON_LEN, SEED_ANON);
	CHECK(off < 0, "anon mismatch at offset %ld", off);
	off = check_pattern(heap, HEAP_LEN, SEED_HEAP);
	CHECK(off < 0, "heap mismatch at offset %ld", off);
	off = check_pattern(data_arr, sizeof(data_arr), SEED_DATA);
	CHECK(off < 0, "data mismatch at offset %ld", off);
	off = check_pattern(bss_arr, sizeof(bss_arr), SEED_BSS);
	CHECK(off < 0, "bss mismatch at offset %ld", off);
}

int main(int argc, char **argv)
{
	void *brk0;

	fixture_init(argc, argv);

	anon = mmap(NULL, ANON_LEN, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (anon == MAP_FAILED)
		die("mmap anon");
	fill_pattern(anon, ANON_LEN, SEED_ANON);

	/* Force the buffer onto the brk heap instead of its own mmap. */
	mallopt(M_MMAP_THRESHOLD, 4 << 20);
	brk0 = sbrk(0);
	heap = malloc(HEAP_LEN);
	if (!heap)
		die("malloc");
	fill_pattern(heap, HEAP_LEN, SEED_HEAP);

	fill_pattern(data_arr, sizeof(data_arr), SEED_DATA);
	fill_pattern(bss_arr, sizeof(bss_arr), SEED_BSS);

	out("READY anon=%p anon_len=%lu heap=%p heap_len=%lu heap_is_brk=%d "
	    "data=%p data_len=%zu bss=%p bss_len=%zu counter=%p\n",
	    (void *)anon, ANON_LEN, (void *)heap, HEAP_LEN,
	    (void *)heap >= brk0 && (void *)(heap + HEAP_LEN) <= sbrk(0),
	    (void *)data_arr, sizeof(data_arr), (void *)bss_arr,
	    sizeof(bss_arr), (void *)&counter);
	fixture_loop(verify, 5);
}
