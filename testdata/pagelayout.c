/*
 * pagelayout: private anonymous mappings with a chosen set of written pages,
 * for the page-scanning tests.
 *
 *   pagelayout WORKDIR LAYOUTFILE
 *
 * LAYOUTFILE is text, one directive a line:
 *   map NPAGES PROT HUGE GAP   a new mapping of NPAGES pages, GAP pages after
 *                              the previous one (0: adjacent to it); PROT is
 *                              rw, r or -; HUGE 1 asks MADV_HUGEPAGE, 0
 *                              MADV_NOHUGEPAGE. All are MAP_NORESERVE.
 *   w I J K ...                pages I, J, K of the last mapping are written
 *   s FIRST STEP               pages FIRST, FIRST+STEP, ... are written
 *
 * Written page I of mapping M (0-based) holds pattern(offset in the page,
 * ((M+1) << 20) + I) (fixture.h); every other page reads as zero. Pages are
 * written first, then the mapping gets its protection. The first mapping
 * starts on a 2 MiB boundary.
 *
 * READY maps=ADDR,ADDR,... (hex, in file order) counter=...
 * A check reads every page of every readable mapping (PROT - mappings are
 * checked from outside, through /proc/PID/mem).
 */
#include "fixture.h"
#include <sys/mman.h>

#define PAGE 4096UL
#define HUGE (2UL << 20)
#define MAXMAPS 64

struct map {
	unsigned long pages, gap;
	int prot, huge;
	unsigned char *addr;
	unsigned char *written; /* one byte per page */
};

static struct map maps[MAXMAPS];
static int nmaps;

static uint64_t seed_of(int m, unsigned long i)
{
	return ((uint64_t)(m + 1) << 20) + i;
}

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
	for (int m = 0; m < nmaps; m++) {
		if (!(maps[m].prot & PROT_READ))
			continue;
		for (unsigned long i = 0; i < maps[m].pages; i++) {
			unsigned char *p = maps[m].addr + i * PAGE;
			if (maps[m].written[i]) {
				long off = check_pattern(p, PAGE, seed_of(m, i));
				CHECK(off < 0, "map %d page %lu: mismatch at +%ld", m, i, off);
			} else {
				CHECK(page_zero(p), "map %d page %lu: not zero", m, i);
			}
		}
	}
}

static void parse(const char *path)
{
	FILE *f = fopen(path, "r");
	char word[32];
	if (!f)
		die("open %s", path);
	while (fscanf(f, "%31s", word) == 1) {
		struct map *cur = nmaps ? &maps[nmaps - 1] : NULL;
		if (!strcmp(word, "map")) {
			char prot[8];
			if (nmaps == MAXMAPS)
				die("more than %d maps", MAXMAPS);
			cur = &maps[nmaps++];
			if (fscanf(f, "%lu %7s %d %lu", &cur->pages, prot, &cur->huge, &cur->gap) != 4 || !cur->pages)
				die("bad map line");
			cur->prot = !strcmp(prot, "rw") ? PROT_READ | PROT_WRITE : !strcmp(prot, "r") ? PROT_READ : PROT_NONE;
			cur->written = calloc(cur->pages, 1);
			if (!cur->written)
				die("calloc");
		} else if (!strcmp(word, "s")) {
			unsigned long first, step;
			if (!cur || fscanf(f, "%lu %lu", &first, &step) != 2 || !step)
				die("bad s line");
			for (unsigned long i = first; i < cur->pages; i += step)
				cur->written[i] = 1;
		} else if (!strcmp(word, "w")) {
			unsigned long i;
			if (!cur)
				die("w before map");
			/* Indices up to the end of the line. */
			for (;;) {
				int c = fgetc(f);
				if (c == '\n' || c == EOF)
					break;
				if (c == ' ' || c == '\t')
					continue;
				ungetc(c, f);
				if (fscanf(f, "%lu", &i) != 1 || i >= cur->pages)
					die("bad page index");
				cur->written[i] = 1;
			}
		} else {
			die("unknown directive %s", word);
		}
	}
	fclose(f);
}

int main(int argc, char **argv)
{
	static char line[4096];
	unsigned long total = HUGE / PAGE;
	unsigned char *res, *cur;
	int n;

	fixture_init(argc, argv);
	if (argc < 3)
		die("usage: pagelayout WORKDIR LAYOUTFILE");
	parse(argv[2]);
	if (!nmaps)
		die("no maps");
	for (int m = 0; m < nmaps; m++)
		total += maps[m].gap + maps[m].pages;
	res = mmap(NULL, total * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (res == MAP_FAILED)
		die("reserve %lu pages", total);
	cur = (unsigned char *)(((uintptr_t)res + HUGE - 1) & ~(HUGE - 1));
	for (int m = 0; m < nmaps; m++) {
		struct map *mp = &maps[m];
		cur += m ? mp->gap * PAGE : 0;
		mp->addr = mmap(cur, mp->pages * PAGE, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
		if (mp->addr == MAP_FAILED)
			die("map %d", m);
		if (madvise(mp->addr, mp->pages * PAGE, mp->huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE))
			die("madvise map %d", m);
		for (unsigned long i = 0; i < mp->pages; i++)
			if (mp->written[i])
				fill_pattern(mp->addr + i * PAGE, PAGE, seed_of(m, i));
		if (mp->prot != (PROT_READ | PROT_WRITE) && mprotect(mp->addr, mp->pages * PAGE, mp->prot))
			die("mprotect map %d", m);
		cur += mp->pages * PAGE;
	}
	/* Give the gaps back, so that only the maps remain. */
	unsigned char *at = res;
	for (int m = 0; m <= nmaps; m++) {
		unsigned char *next = m < nmaps ? maps[m].addr : res + total * PAGE;
		if (next > at && munmap(at, next - at))
			die("munmap gap");
		if (m < nmaps)
			at = maps[m].addr + maps[m].pages * PAGE;
	}

	n = snprintf(line, sizeof(line), "READY maps=");
	for (int m = 0; m < nmaps && n < (int)sizeof(line) - 64; m++)
		n += snprintf(line + n, sizeof(line) - n, "%s%p", m ? "," : "", (void *)maps[m].addr);
	out("%s counter=%p\n", line, (void *)&counter);
	fixture_loop(verify, 5);
}
