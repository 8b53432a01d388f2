/*
 * filemap: file-backed mappings.
 *   WORKDIR/data.bin (1 MiB, pattern) mapped MAP_PRIVATE read-write with
 *   pages 2 and 5 modified (copy-on-write; the file stays unchanged), and
 *   mapped a second time MAP_PRIVATE read-only.
 *   WORKDIR/shared.bin (256 KiB) mapped MAP_SHARED read-write and written.
 * The fds are closed after mmap: only the mappings reference the files.
 */
#include "fixture.h"
#include <sys/mman.h>

#define PAGE 4096UL
#define DATA_LEN (1UL << 20)
#define SHARED_LEN (256UL << 10)

enum { SEED_FILE = 7, SEED_COW = 8, SEED_SHARED = 9 };

static const unsigned long cow_pages[] = { 2, 5 };

static unsigned char *priv, *ro, *shared;
static unsigned char filebuf[DATA_LEN];

static int is_cow(unsigned long page)
{
	return page == cow_pages[0] || page == cow_pages[1];
}

/* Reads a whole file of len bytes with pread into filebuf. */
static int read_file(const char *name, size_t len)
{
	int fd = open(wpath(name), O_RDONLY | O_CLOEXEC);
	size_t got = 0;
	if (fd < 0)
		return -1;
	while (got < len) {
		ssize_t n = pread(fd, filebuf + got, len - got, (off_t)got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	return got == len ? 0 : -1;
}

static void verify(void)
{
	long off;

	for (unsigned long pg = 0; pg < DATA_LEN / PAGE; pg++) {
		uint64_t seed = is_cow(pg) ? SEED_COW : SEED_FILE;
		/* The pattern is a function of the offset within the file. */
		const uint64_t *w = (const uint64_t *)(priv + pg * PAGE);
		for (unsigned long i = 0; i < PAGE / 8; i++)
			if (w[i] != pattern(pg * PAGE + i * 8, seed)) {
				CHECK(0, "priv page %lu mismatch at +%lu", pg, i * 8);
				break;
			}
	}
	off = check_pattern(ro, DATA_LEN, SEED_FILE);
	CHECK(off < 0, "ro mapping mismatch at %ld", off);

	CHECK(read_file("data.bin", DATA_LEN) == 0, "read data.bin");
	off = check_pattern(filebuf, DATA_LEN, SEED_FILE);
	CHECK(off < 0, "data.bin on disk changed at %ld", off);

	off = check_pattern(shared, SHARED_LEN, SEED_SHARED);
	CHECK(off < 0, "shared mapping mismatch at %ld", off);
	CHECK(read_file("shared.bin", SHARED_LEN) == 0, "read shared.bin");
	CHECK(memcmp(filebuf, shared, SHARED_LEN) == 0,
	      "shared.bin on disk differs from the mapping");
}

int main(int argc, char **argv)
{
	int fd;

	fixture_init(argc, argv);

	fd = open(wpath("data.bin"), O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		die("open data.bin");
	fill_pattern(filebuf, DATA_LEN, SEED_FILE);
	if (write(fd, filebuf, DATA_LEN) != (ssize_t)DATA_LEN)
		die("write data.bin");
	priv = mmap(NULL, DATA_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	ro = mmap(NULL, DATA_LEN, PROT_READ, MAP_PRIVATE, fd, 0);
	if (priv == MAP_FAILED || ro == MAP_FAILED)
		die("mmap data.bin");
	close(fd);
	for (size_t i = 0; i < 2; i++) {
		uint64_t *w = (uint64_t *)(priv + cow_pages[i] * PAGE);
		for (unsigned long j = 0; j < PAGE / 8; j++)
			w[j] = pattern(cow_pages[i] * PAGE + j * 8, SEED_COW);
	}
	/* Touch some other pages of priv by reading only. */
	for (unsigned long off = 0; off < DATA_LEN; off += 16 * PAGE)
		counter += priv[off];
	counter = 0;

	fd = open(wpath("shared.bin"), O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || ftruncate(fd, SHARED_LEN))
		die("create shared.bin");
	shared = mmap(NULL, SHARED_LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (shared == MAP_FAILED)
		die("mmap shared.bin");
	close(fd);
	fill_pattern(shared, SHARED_LEN, SEED_SHARED);

	out("READY priv=%p priv_len=%lu ro=%p ro_len=%lu shared=%p shared_len=%lu "
	    "cow_pages=%lu,%lu data_file=data.bin shared_file=shared.bin "
	    "counter=%p\n",
	    (void *)priv, DATA_LEN, (void *)ro, DATA_LEN, (void *)shared,
	    SHARED_LEN, cow_pages[0], cow_pages[1], (void *)&counter);
	fixture_loop(verify, 5);
}
