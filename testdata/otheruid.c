/*
 * otheruid: a parent and a child that run as nobody, as a daemon does that
 * drops root after its setup (PostgreSQL refuses to run as root).
 *   As root: lowered soft and hard resource limits (the table below),
 *   a home directory only uid 65534 may write (mode 0700), made the cwd;
 *   then securebits that lock keep-caps off, supplementary groups 100 and
 *   4242, gids and uids 65534 (every capability gone), dumpable set back to 1, and a file "data" created in
 *   the home directory (mode 0600) and held open for appending.
 *   The child (forked after the drop) sets its parent-death signal and makes
 *   itself non-dumpable, then counts in shared memory and checks its own
 *   credentials, limits and flags every 5 ms.
 * A check verifies the parent's credentials, limits and flags, that it can
 * still append to "data" (by its fd and by a new open), create a file in
 * the home directory, not read /etc/shadow, and that the child counts on
 * with no failure of its own.
 */
#include "fixture.h"
#include <grp.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define UID 65534
#define GID 65534
/* As `setpriv --securebits +noroot,+noroot_locked,+keep_caps_locked`. */
#define SECBITS (SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_KEEP_CAPS_LOCKED)

static const gid_t groups[] = { 100, 4242 };

static const struct {
	int res;
	rlim_t cur, max;
} lims[] = {
	{ RLIMIT_NOFILE, 512, 1024 },
	{ RLIMIT_CORE, 0, 0 },
	{ RLIMIT_STACK, 4 << 20, 16 << 20 },
	{ RLIMIT_NPROC, 3000, 4000 },
	{ RLIMIT_MEMLOCK, 64 << 10, 128 << 10 },
	{ RLIMIT_MSGQUEUE, 100000, 200000 },
	{ RLIMIT_FSIZE, 1 << 30, 2UL << 30 },
	{ RLIMIT_CPU, 100000, 200000 },
};

struct shared {
	volatile unsigned long counter;
	volatile int failed;
	char msg[256];
};
static struct shared *sh;
static pid_t child;
static int data_fd;
static unsigned long last_child, files;

/* common checks what both processes must see; dumpable is 1 or 0. */
static void common(int dumpable)
{
	uid_t r, e, s;
	gid_t gr, ge, gs, g[8];
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];

	getresuid(&r, &e, &s);
	CHECK(r == UID && e == UID && s == UID, "uids %d %d %d", r, e, s);
	getresgid(&gr, &ge, &gs);
	CHECK(gr == GID && ge == GID && gs == GID, "gids %d %d %d", gr, ge, gs);
	int n = getgroups(8, g);
	CHECK(n == 2 && g[0] == groups[0] && g[1] == groups[1], "%d groups: %d %d", n, g[0], g[1]);
	memset(d, 0, sizeof(d));
	syscall(SYS_capget, &h, d);
	CHECK(!d[0].effective && !d[0].permitted && !d[0].inheritable && !d[1].effective && !d[1].permitted,
	      "capabilities eff %#x prm %#x inh %#x", d[0].effective, d[0].permitted, d[0].inheritable);
	CHECK(prctl(PR_GET_SECUREBITS) == SECBITS, "securebits %#x", prctl(PR_GET_SECUREBITS));
	CHECK(prctl(PR_GET_DUMPABLE) == dumpable, "dumpable %d, want %d", prctl(PR_GET_DUMPABLE), dumpable);
	for (size_t i = 0; i < sizeof(lims) / sizeof(lims[0]); i++) {
		struct rlimit rl;
		getrlimit(lims[i].res, &rl);
		CHECK(rl.rlim_cur == lims[i].cur && rl.rlim_max == lims[i].max, "limit %d: %lu/%lu, want %lu/%lu", lims[i].res,
		      (unsigned long)rl.rlim_cur, (unsigned long)rl.rlim_max, (unsigned long)lims[i].cur, (unsigned long)lims[i].max);
	}
}

static void child_loop(void)
{
	for (;;) {
		common(0);
		int pds = 0;
		prctl(PR_GET_PDEATHSIG, &pds);
		CHECK(pds == SIGKILL, "child's parent-death signal %d", pds);
		if (failed && !sh->failed) {
			snprintf(sh->msg, sizeof(sh->msg), "child: %.200s", failmsg);
			sh->failed = 1;
		}
		sh->counter++;
		sleep_ms(5);
	}
}

static void verify(void)
{
	char name[64];

	common(1);
	CHECK(write(data_fd, "fd\n", 3) == 3, "append to data by its fd: %s", strerror(errno));
	int fd = open("data", O_WRONLY | O_APPEND);
	CHECK(fd >= 0 && write(fd, "open\n", 5) == 5, "append to data by a new open: %s", strerror(errno));
	close(fd);
	snprintf(name, sizeof(name), "new-%lu", ++files);
	fd = open(name, O_WRONLY | O_CREAT | O_EXCL, 0600);
	CHECK(fd >= 0, "create %s in the home directory: %s", name, strerror(errno));
	close(fd);
	fd = open("/etc/shadow", O_RDONLY);
	CHECK(fd < 0 && errno == EACCES, "open /etc/shadow as nobody: fd %d errno %d", fd, errno);
	if (fd >= 0)
		close(fd);
	CHECK(kill(child, 0) == 0, "child %d gone: %s", child, strerror(errno));
	CHECK(!sh->failed, "%s", sh->msg);
	/* The child counts every 5 ms; give it a second (it may not have run
	 * since the restore). */
	for (int i = 0; i < 1000 && sh->counter <= last_child; i++)
		sleep_ms(1);
	CHECK(sh->counter > last_child, "child's counter stuck at %lu", sh->counter);
	last_child = sh->counter;
}

static void on_bye(int sig)
{
	(void)sig;
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	char buf[64];
	int n = snprintf(buf, sizeof(buf), "BYE counter=%lu\n", counter);
	write_all(buf, (size_t)n);
	_exit(0);
}

int main(int argc, char **argv)
{
	struct sigaction sa;

	fixture_init(argc, argv);
	if (geteuid() != 0) {
		out("NOTROOT\n");
		return 77;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_bye;
	sigaction(SIGUSR2, &sa, NULL);
	const char *home = wpath("home");
	if (mkdir(home, 0700) || chown(home, UID, GID) || chdir(home))
		die("home directory %s", home);
	for (size_t i = 0; i < sizeof(lims) / sizeof(lims[0]); i++) {
		struct rlimit rl = { lims[i].cur, lims[i].max };
		if (setrlimit(lims[i].res, &rl))
			die("setrlimit %d", lims[i].res);
	}
	if (prctl(PR_SET_SECUREBITS, SECBITS))
		die("securebits");
	if (setgroups(2, groups) || setresgid(GID, GID, GID) || setresuid(UID, UID, UID))
		die("drop to uid %d", UID);
	if (prctl(PR_SET_DUMPABLE, 1))
		die("dumpable");
	data_fd = open("data", O_WRONLY | O_CREAT | O_APPEND, 0600);
	if (data_fd < 0)
		die("create data");
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		die("mmap");
	if ((child = fork()) == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		prctl(PR_SET_DUMPABLE, 0);
		signal(SIGUSR1, SIG_IGN);
		signal(SIGUSR2, SIG_DFL);
		close(data_fd);
		child_loop();
	}
	if (child < 0)
		die("fork");
	while (sh->counter == 0)
		sleep_ms(1);
	out("READY child=%d counter=%p\n", child, (void *)&counter);
	fixture_loop(verify, 5);
}
