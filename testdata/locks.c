/*
 * locks: file locks of every kind, held by a parent and its child.
 *   posix.dat   one description (fd pf, inherited by the child): the parent
 *               holds a POSIX write lock on bytes 10-29, the child a POSIX
 *               read lock on bytes 50-59, both through that description.
 *   ofd.dat     an OFD write lock on bytes 0-99 and an OFD read lock on
 *               bytes 200-EOF (fd of).
 *   flock.dat   flock(LOCK_EX) (fd ff, inherited by the child: the lock is
 *               the description's).
 *   flocksh.dat flock(LOCK_SH) (fd fs).
 *   shm.dat     the sqlite WAL -shm pattern: a second fd of the file was
 *               mapped MAP_SHARED and closed; the parent holds POSIX locks
 *               on bytes 120-127 (write) and 128-135 (read) through the
 *               first fd (sf), taken after that close.
 * Verify (parent): the child's lock is seen through pf (F_GETLK), the OFD
 * locks and the flocks are seen from fresh descriptions (F_OFD_GETLK,
 * flock LOCK_NB), the mapping still shows what was written to it.
 * Files with a POSIX lock of the parent are never opened again by it: a
 * close of another fd of the file would drop its locks.
 * Arg "lease": the parent also holds a read lease on lease.dat (fd ls).
 */
#include "fixture.h"
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>

static int pf, of, ff, fs, sf;
static pid_t c;
static volatile char *map;

static void lock(int fd, int cmd, short type, off_t start, off_t len)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len };
	if (fcntl(fd, cmd, &fl))
		die("lock fd %d %ld+%ld", fd, (long)start, (long)len);
}

/* The lock in the way of a write lock on start+len through fd (cmd
 * F_GETLK or F_OFD_GETLK): its type and pid. */
static struct flock probe(int fd, int cmd, off_t start, off_t len)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = start, .l_len = len };
	if (fcntl(fd, cmd, &fl))
		fl.l_type = -1;
	return fl;
}

static int mkfile(const char *name)
{
	int fd = open(wpath(name), O_RDWR | O_CREAT | O_TRUNC, 0644);
	char buf[4096];
	if (fd < 0)
		die("open %s", name);
	memset(buf, 'x', sizeof(buf));
	if (write(fd, buf, sizeof(buf)) != sizeof(buf))
		die("write %s", name);
	return fd;
}

static void verify(void)
{
	struct flock fl;
	int fd;

	fl = probe(pf, F_GETLK, 0, 0);
	CHECK(fl.l_type == F_RDLCK && fl.l_pid == c && fl.l_start == 50 && fl.l_len == 10,
	      "posix.dat: the child's read lock on 50-59 is gone (type %d pid %d %ld+%ld)",
	      fl.l_type, fl.l_pid, (long)fl.l_start, (long)fl.l_len);

	fd = open(wpath("ofd.dat"), O_RDWR | O_CLOEXEC);
	fl = probe(fd, F_OFD_GETLK, 50, 1);
	CHECK(fl.l_type == F_WRLCK && fl.l_start == 0 && fl.l_len == 100,
	      "ofd.dat: the OFD write lock on 0-99 is gone (type %d %ld+%ld)", fl.l_type, (long)fl.l_start, (long)fl.l_len);
	fl = probe(fd, F_OFD_GETLK, 150, 10);
	CHECK(fl.l_type == F_UNLCK, "ofd.dat: 150-159 is locked (type %d)", fl.l_type);
	fl = probe(fd, F_OFD_GETLK, 5000, 1);
	CHECK(fl.l_type == F_RDLCK && fl.l_start == 200 && fl.l_len == 0,
	      "ofd.dat: the OFD read lock on 200-EOF is gone (type %d %ld+%ld)", fl.l_type, (long)fl.l_start, (long)fl.l_len);
	close(fd);

	fd = open(wpath("flock.dat"), O_RDONLY | O_CLOEXEC);
	CHECK(flock(fd, LOCK_SH | LOCK_NB) == -1 && errno == EWOULDBLOCK, "flock.dat: not locked exclusively");
	close(fd);
	fd = open(wpath("flocksh.dat"), O_RDONLY | O_CLOEXEC);
	CHECK(flock(fd, LOCK_EX | LOCK_NB) == -1 && errno == EWOULDBLOCK, "flocksh.dat: not locked");
	CHECK(flock(fd, LOCK_SH | LOCK_NB) == 0, "flocksh.dat: not shared (errno %d)", errno);
	close(fd);

	CHECK(map[0] == 'M' && map[4095] == 'N', "shm.dat: the shared mapping lost its contents");
	CHECK(kill(c, 0) == 0, "the child is gone");
}

int main(int argc, char **argv)
{
	int fd2;

	fixture_init(argc, argv);
	pf = mkfile("posix.dat");
	of = mkfile("ofd.dat");
	ff = mkfile("flock.dat");
	fs = mkfile("flocksh.dat");
	sf = mkfile("shm.dat");

	lock(pf, F_SETLK, F_WRLCK, 10, 20);
	lock(of, F_OFD_SETLK, F_WRLCK, 0, 100);
	lock(of, F_OFD_SETLK, F_RDLCK, 200, 0);
	if (flock(ff, LOCK_EX | LOCK_NB) || flock(fs, LOCK_SH | LOCK_NB))
		die("flock");

	fd2 = open(wpath("shm.dat"), O_RDWR);
	if (fd2 < 0)
		die("open shm.dat again");
	map = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd2, 0);
	if (map == MAP_FAILED)
		die("mmap shm.dat");
	close(fd2);
	map[0] = 'M';
	map[4095] = 'N';
	lock(sf, F_SETLK, F_WRLCK, 120, 8);
	lock(sf, F_SETLK, F_RDLCK, 128, 8);
	if (argc > 2 && !strcmp(argv[2], "lease")) {
		close(mkfile("lease.dat"));
		int ls = open(wpath("lease.dat"), O_RDONLY);
		if (ls < 0 || fcntl(ls, F_SETLEASE, F_RDLCK))
			die("lease");
	}

	if ((c = fork()) == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		signal(SIGUSR1, SIG_IGN);
		signal(SIGUSR2, SIG_DFL);
		lock(pf, F_SETLK, F_RDLCK, 50, 10);
		for (;;)
			pause();
	}
	for (int i = 0; i < 400 && probe(pf, F_GETLK, 50, 1).l_type != F_RDLCK; i++)
		sleep_ms(5);
	out("READY c=%d counter=%p\n", c, (void *)&counter);
	fixture_loop(verify, 5);
}
