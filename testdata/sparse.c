/*
 * sparse: a 64 MiB anonymous mapping of which only pages 0, 17, 1000 and the
 * last one were written, and a 1 MiB PROT_READ mapping that was only read (its pages
 * map the shared zero page).  Transparent huge pages are disabled on both so
 * that untouched pages stay unpopulated.
 *
 * Verification reads every touched page fully but only samples untouched
 * pages (every 509th page and the neighbours of touched ones), so that most
 * of the sparse mapping stays unpopulated across checks.
 */
#include "fixture.h"
#include <sys/mman.h>

#define PAGE 4096UL
#define SPARSE_LEN (64UL << 20)
#define SPARSE_PAGES (SPARSE_LEN / PAGE)
#define RO_LEN (1UL << 20)

static const unsigned long touched[] = { 0, 17, 1000, SPARSE_PAGES - 1 };
#define NTOUCHED (sizeof(touched) / sizeof(touched[0]))

static unsigned char *sparse, *ro;

static int is_touched(unsigned long idx)
{
	for (size_t i = 0; i < NTOUCHED; i++)
		if (touched[i] == idx)
			return 1;
	return 0;
}

/* Returns 1 if the page is all zero bytes. */
static int page_zero(const unsigned char *p)
{
	const volatile uint64_t *w = (const volatile uint64_t *)p;
	for (size_t i = 0; i < PAGE / 8; i++)
		if (w[i])
			return 0;
	return 1;
}

static void verify(void)
{
	for (size_t i = 0; i < NTOUCHED; i++) {
		unsigned long idx = touched[i];
		long off = check_pattern(sparse + idx * PAGE, PAGE, 100 + idx);
		CHECK(off < 0, "touched page %lu mismatch at +%ld", idx, off);
	}
	for (unsigned long idx = 0; idx < SPARSE_PAGES; idx++) {
		int probe = idx % 509 == 0 || is_touched(idx + 1) ||
			    (idx > 0 && is_touched(idx - 1));
		if (!probe || is_touched(idx))
			continue;
		CHECK(page_zero(sparse + idx * PAGE),
		      "untouched page %lu not zero", idx);
	}
	for (unsigned long off = 0; off < RO_LEN; off += PAGE)
		CHECK(page_zero(ro + off), "readonly page at +%lu not zero", off);
}

int main(int argc, char **argv)
{
	volatile unsigned char sink;

	fixture_init(argc, argv);

	sparse = mmap(NULL, SPARSE_LEN, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	ro = mmap(NULL, RO_LEN, PROT_READ,
		  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (sparse == MAP_FAILED || ro == MAP_FAILED)
		die("mmap");
	madvise(sparse, SPARSE_LEN, MADV_NOHUGEPAGE);
	madvise(ro, RO_LEN, MADV_NOHUGEPAGE);

	for (size_t i = 0; i < NTOUCHED; i++)
		fill_pattern(sparse + touched[i] * PAGE, PAGE, 100 + touched[i]);
	for (unsigned long off = 0; off < RO_LEN; off += PAGE)
		sink = ro[off];
	(void)sink;

	out("READY sparse=%p sparse_len=%lu touched=%lu,%lu,%lu,%lu "
	    "readonly=%p readonly_len=%lu page_size=%lu counter=%p\n",
	    (void *)sparse, SPARSE_LEN, touched[0], touched[1], touched[2],
	    touched[3], (void *)ro, RO_LEN, PAGE, (void *)&counter);
	fixture_loop(verify, 5);
}
