/*
 * opath: O_PATH descriptors (open(2)) on a symlink itself (O_NOFOLLOW), a
 * directory (O_DIRECTORY) and a regular file, as systemd holds
 * /etc/localtime.
 *
 *   opath WORKDIR
 * Makes WORKDIR/data (a regular file), WORKDIR/sub/inner and the symlink
 * WORKDIR/link -> "data", then opens
 *   fd_link = open(link, O_PATH|O_NOFOLLOW)
 *   fd_dir  = open(sub, O_PATH|O_DIRECTORY)
 *   fd_file = open(data, O_PATH)
 * Verification, for each: F_GETFL keeps O_PATH and exactly the O_NOFOLLOW
 * and O_DIRECTORY it was opened with; fstatat(fd, "", AT_EMPTY_PATH) gives
 * the same inode and type; readlinkat(fd_link, "") reads "data";
 * fstatat(fd_dir, "inner") finds the file inside; read(fd_file) fails with
 * EBADF (no I/O on an O_PATH fd).
 *
 * READY fd_link=N fd_dir=N fd_file=N ino_link=N ino_dir=N ino_file=N counter=0xADDR
 */
#include "fixture.h"
#include <sys/stat.h>

#define MASK (O_PATH | O_NOFOLLOW | O_DIRECTORY | O_ACCMODE)

static struct {
	const char *name;
	int flags;
	mode_t type;
	int fd;
	struct stat st;
} fds[3] = {
	{"link", O_PATH | O_NOFOLLOW, S_IFLNK, -1, {0}},
	{"sub", O_PATH | O_DIRECTORY, S_IFDIR, -1, {0}},
	{"data", O_PATH, S_IFREG, -1, {0}},
};

static void verify(void)
{
	for (int i = 0; i < 3; i++) {
		int fd = fds[i].fd;
		int fl = fcntl(fd, F_GETFL);
		CHECK(fl >= 0 && (fl & MASK) == fds[i].flags, "fd %d (%s): flags %#o, want %#o", fd, fds[i].name, fl & MASK, fds[i].flags);
		struct stat st;
		if (fstatat(fd, "", &st, AT_EMPTY_PATH) != 0) {
			CHECK(0, "fd %d (%s): fstatat: %s", fd, fds[i].name, strerror(errno));
			continue;
		}
		CHECK(st.st_ino == fds[i].st.st_ino && st.st_dev == fds[i].st.st_dev, "fd %d (%s): another inode", fd, fds[i].name);
		CHECK((st.st_mode & S_IFMT) == fds[i].type, "fd %d (%s): type %o", fd, fds[i].name, st.st_mode & S_IFMT);
	}
	char buf[64];
	ssize_t n = readlinkat(fds[0].fd, "", buf, sizeof buf);
	CHECK(n == 4 && memcmp(buf, "data", 4) == 0, "readlinkat of the link fd: %zd (%s)", n, n < 0 ? strerror(errno) : "");
	struct stat st;
	CHECK(fstatat(fds[1].fd, "inner", &st, 0) == 0, "fstatat(dir fd, inner): %s", strerror(errno));
	char c;
	CHECK(read(fds[2].fd, &c, 1) < 0 && errno == EBADF, "read on the O_PATH file fd did not fail with EBADF");
}

int main(int argc, char **argv)
{
	fixture_init(argc, argv);
	int f = open(wpath("data"), O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (f < 0 || write(f, "hello\n", 6) != 6)
		die("data");
	close(f);
	if (mkdir(wpath("sub"), 0700) && errno != EEXIST)
		die("mkdir");
	f = open(wpath("sub/inner"), O_WRONLY | O_CREAT, 0600);
	if (f < 0)
		die("inner");
	close(f);
	unlink(wpath("link"));
	if (symlink("data", wpath("link")))
		die("symlink");
	for (int i = 0; i < 3; i++) {
		fds[i].fd = open(wpath(fds[i].name), fds[i].flags);
		if (fds[i].fd < 0)
			die("open %s", fds[i].name);
		if (fstatat(fds[i].fd, "", &fds[i].st, AT_EMPTY_PATH))
			die("fstatat %s", fds[i].name);
	}
	out("READY fd_link=%d fd_dir=%d fd_file=%d ino_link=%lu ino_dir=%lu ino_file=%lu counter=%p\n",
	    fds[0].fd, fds[1].fd, fds[2].fd, (unsigned long)fds[0].st.st_ino, (unsigned long)fds[1].st.st_ino,
	    (unsigned long)fds[2].st.st_ino, (void *)&counter);
	fixture_loop(verify, 5);
}
