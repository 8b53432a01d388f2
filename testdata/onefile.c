/*
 * onefile: a process holding N descriptors of one regular file, for the fd
 * scaling benchmark and tests.
 *
 *   onefile WORKDIR N MODE
 * MODE "distinct": N open() calls (N open file descriptions, each at its own
 * offset i); "shared": one open() and N-1 dup()s (one description).
 * Raises RLIMIT_NOFILE's soft limit to its hard limit first.
 * Verification: every fd is still open, on the same file, at its offset
 * (distinct) or all sharing one offset (shared).
 *
 * READY n=N counter=0xADDR
 */
#include "fixture.h"
#include <sys/resource.h>
#include <sys/stat.h>

static int n, shared;
static int first;
static struct stat want;

static void verify(void)
{
	for (int i = 0; i < n; i++) {
		int fd = first + i;
		struct stat st;
		if (fstat(fd, &st) != 0) {
			CHECK(0, "fd %d: fstat: %s", fd, strerror(errno));
			return;
		}
		CHECK(st.st_ino == want.st_ino && st.st_dev == want.st_dev, "fd %d: another file", fd);
		off_t pos = lseek(fd, 0, SEEK_CUR);
		off_t exp = shared ? 7 : i;
		CHECK(pos == exp, "fd %d: offset %ld, want %ld", fd, (long)pos, (long)exp);
	}
	if (shared) { /* one description: moving one fd moves them all */
		lseek(first, 9, SEEK_SET);
		off_t pos = lseek(first + n - 1, 0, SEEK_CUR);
		CHECK(pos == 9, "fd %d does not share fd %d's description", first + n - 1, first);
		lseek(first, 7, SEEK_SET);
	}
}

int main(int argc, char **argv)
{
	fixture_init(argc, argv);
	if (argc < 4)
		die("usage: onefile WORKDIR N distinct|shared");
	n = atoi(argv[2]);
	shared = strcmp(argv[3], "shared") == 0;
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl))
		die("getrlimit");
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl))
		die("setrlimit");
	if ((rlim_t)n + 16 > rl.rlim_cur)
		die("%d fds do not fit the limit %lu", n, (unsigned long)rl.rlim_cur);
	const char *path = wpath("data");
	int fd = open(path, O_RDWR | O_CREAT, 0600);
	if (fd < 0)
		die("open %s", path);
	first = fd;
	if (fstat(fd, &want))
		die("fstat");
	for (int i = 1; i < n; i++) {
		int f = shared ? dup(first) : open(path, O_RDWR);
		if (f != first + i)
			die("fd %d, want %d", f, first + i);
		if (!shared && lseek(f, i, SEEK_SET) != i)
			die("lseek");
	}
	if (shared)
		lseek(first, 7, SEEK_SET);
	out("READY n=%d counter=%p\n", n, (void *)&counter);
	fixture_loop(verify, 5);
}
