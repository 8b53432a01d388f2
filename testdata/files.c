/*
 * files: open file descriptors of many kinds, plus cwd, umask and rlimits.
 *   a.txt   O_RDWR|O_CREAT, 1000 bytes written, offset 123; dup()ed (shared offset)
 *   b.txt   O_WRONLY|O_APPEND, 50 bytes written (offset 50)
 *   c.txt   O_RDONLY at offset 77; dup2()ed to fd 42 (shared offset)
 *   WORKDIR O_RDONLY|O_DIRECTORY
 *   /dev/null O_RDWR|O_NONBLOCK, /dev/zero O_RDONLY + FD_CLOEXEC via fcntl,
 *   /dev/urandom O_RDONLY|O_CLOEXEC
 * cwd = WORKDIR, umask 027, RLIMIT_NOFILE soft 1000, RLIMIT_CORE soft 0.
 */
#include "fixture.h"
#include <sys/resource.h>
#include <sys/stat.h>

enum { A, B, C, DIRFD, NUL, ZERO, URND, DUPA, C42, NFD };

static const char *names[NFD] = { "a", "b", "c", "dir", "null", "zero",
				  "urandom", "dup", "c42" };
static int fds[NFD];
static off_t offs[NFD];       /* expected offset, -1 = not checked */
static int flags[NFD];        /* expected F_GETFL & FLMASK */
static int cloexec[NFD];      /* expected FD_CLOEXEC */
static struct stat st[NFD];   /* identity at setup */
static char cwd[4096];
static struct rlimit nofile, core;

#define FLMASK (O_ACCMODE | O_APPEND | O_NONBLOCK)

static void verify_shared(int fd, int other, off_t expect, const char *what)
{
	CHECK(lseek(fd, 500, SEEK_SET) == 500, "%s: lseek", what);
	CHECK(lseek(other, 0, SEEK_CUR) == 500, "%s: offset not shared", what);
	CHECK(lseek(fd, expect, SEEK_SET) == expect, "%s: lseek back", what);
}

static void verify(void)
{
	struct stat s;
	struct rlimit rl;
	char buf[4096], c;
	mode_t m;

	for (int i = 0; i < NFD; i++) {
		int fd = fds[i];
		CHECK(fstat(fd, &s) == 0, "fd %d (%s) not open", fd, names[i]);
		CHECK(s.st_dev == st[i].st_dev && s.st_ino == st[i].st_ino &&
			      s.st_rdev == st[i].st_rdev,
		      "fd %d (%s) refers to another file", fd, names[i]);
		if (offs[i] >= 0)
			CHECK(lseek(fd, 0, SEEK_CUR) == offs[i],
			      "fd %d (%s) offset %ld want %ld", fd, names[i],
			      (long)lseek(fd, 0, SEEK_CUR), (long)offs[i]);
		CHECK((fcntl(fd, F_GETFL) & FLMASK) == flags[i],
		      "fd %d (%s) flags %#x want %#x", fd, names[i],
		      fcntl(fd, F_GETFL) & FLMASK, flags[i]);
		CHECK((fcntl(fd, F_GETFD) & FD_CLOEXEC) == cloexec[i],
		      "fd %d (%s) cloexec %d want %d", fd, names[i],
		      fcntl(fd, F_GETFD) & FD_CLOEXEC, cloexec[i]);
	}
	verify_shared(fds[A], fds[DUPA], offs[A], "a/dup");
	verify_shared(fds[C42], fds[C], offs[C], "c/42");
	CHECK(pread(fds[A], &c, 1, 999) == 1 && c == (char)('a' + 999 % 26),
	      "a.txt content");
	CHECK(pread(fds[C], &c, 1, 150) == 1 && c == (char)('A' + 150 % 26),
	      "c.txt content");

	buf[0] = 0;
	CHECK(getcwd(buf, sizeof(buf)) && strcmp(buf, cwd) == 0,
	      "cwd is %.200s want %.200s", buf, cwd);
	m = umask(0);
	umask(m);
	CHECK(m == 027, "umask %03o want 027", (unsigned)m);
	CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
		      rl.rlim_cur == nofile.rlim_cur &&
		      rl.rlim_max == nofile.rlim_max,
	      "RLIMIT_NOFILE %lu/%lu", (unsigned long)rl.rlim_cur,
	      (unsigned long)rl.rlim_max);
	CHECK(getrlimit(RLIMIT_CORE, &rl) == 0 && rl.rlim_cur == core.rlim_cur &&
		      rl.rlim_max == core.rlim_max,
	      "RLIMIT_CORE %lu/%lu", (unsigned long)rl.rlim_cur,
	      (unsigned long)rl.rlim_max);
}

static int xopen(const char *path, int fl)
{
	int fd = open(path, fl, 0644);
	if (fd < 0)
		die("open %s", path);
	return fd;
}

int main(int argc, char **argv)
{
	char buf[1000];
	int fd;

	fixture_init(argc, argv);

	for (int i = 0; i < 1000; i++)
		buf[i] = (char)('a' + i % 26);
	fds[A] = xopen(wpath("a.txt"), O_RDWR | O_CREAT | O_TRUNC);
	if (write(fds[A], buf, 1000) != 1000 || lseek(fds[A], 123, SEEK_SET) != 123)
		die("a.txt");
	fds[B] = xopen(wpath("b.txt"), O_WRONLY | O_APPEND | O_CREAT | O_TRUNC);
	if (write(fds[B], buf, 50) != 50)
		die("b.txt");
	fd = xopen(wpath("c.txt"), O_WRONLY | O_CREAT | O_TRUNC);
	for (int i = 0; i < 200; i++)
		buf[i] = (char)('A' + i % 26);
	if (write(fd, buf, 200) != 200)
		die("c.txt");
	close(fd);
	fds[C] = xopen(wpath("c.txt"), O_RDONLY);
	if (lseek(fds[C], 77, SEEK_SET) != 77)
		die("lseek c.txt");
	fds[DIRFD] = xopen(workdir, O_RDONLY | O_DIRECTORY);
	fds[NUL] = xopen("/dev/null", O_RDWR | O_NONBLOCK);
	fds[ZERO] = xopen("/dev/zero", O_RDONLY);
	fds[URND] = xopen("/dev/urandom", O_RDONLY | O_CLOEXEC);
	fds[DUPA] = dup(fds[A]);
	fds[C42] = dup2(fds[C], 42);
	if (fds[DUPA] < 0 || fds[C42] != 42 ||
	    fcntl(fds[ZERO], F_SETFD, FD_CLOEXEC) < 0)
		die("dup/fcntl");

	int fl[NFD] = { O_RDWR, O_WRONLY | O_APPEND, O_RDONLY, O_RDONLY,
			O_RDWR | O_NONBLOCK, O_RDONLY, O_RDONLY, O_RDWR, O_RDONLY };
	off_t of[NFD] = { 123, 50, 77, -1, -1, -1, -1, 123, 77 };
	for (int i = 0; i < NFD; i++) {
		flags[i] = fl[i];
		offs[i] = of[i];
		cloexec[i] = (i == ZERO || i == URND) ? FD_CLOEXEC : 0;
		if (fstat(fds[i], &st[i]))
			die("fstat");
	}

	if (chdir(workdir) || !getcwd(cwd, sizeof(cwd)))
		die("chdir");
	umask(027);
	getrlimit(RLIMIT_NOFILE, &nofile);
	nofile.rlim_cur = 1000;
	getrlimit(RLIMIT_CORE, &core);
	core.rlim_cur = 0;
	if (setrlimit(RLIMIT_NOFILE, &nofile) || setrlimit(RLIMIT_CORE, &core))
		die("setrlimit");

	out("READY fd_a=%d off_a=123 fd_b=%d off_b=50 fd_c=%d off_c=77 fd_dir=%d "
	    "fd_null=%d fd_zero=%d fd_urandom=%d fd_dup=%d fd_c42=%d "
	    "cloexec=%d,%d nonblock=%d cwd=%s umask=027 nofile=%lu nofile_max=%lu "
	    "core=0 counter=%p\n",
	    fds[A], fds[B], fds[C], fds[DIRFD], fds[NUL], fds[ZERO], fds[URND],
	    fds[DUPA], fds[C42], fds[ZERO], fds[URND], fds[NUL], cwd,
	    (unsigned long)nofile.rlim_cur, (unsigned long)nofile.rlim_max,
	    (void *)&counter);
	fixture_loop(verify, 5);
}
