/*
 * creds: credentials, capabilities, securebits, per-task knobs and a
 * seccomp filter.  Runs as uid 1000 (euid 1001, suid 1002), gids 2000-2002,
 * groups 100 and 200, keeping CAP_NET_BIND_SERVICE (effective, inheritable,
 * ambient) and CAP_KILL (permitted), CAP_SYS_BOOT dropped from the bounding
 * set; personality ADDR_NO_RANDOMIZE, no_new_privs, dumpable 1, parent-death
 * signal SIGHUP, timer slack 123456 ns, nice 5, SCHED_BATCH, child
 * subreaper, a robust list; seccomp: sethostname fails with errno 42.
 */
#include "fixture.h"
#include <grp.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stddef.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/fsuid.h>
#include <sys/resource.h>

struct robust { void *next; long off; void *pending; };
static struct robust robust_head = { &robust_head, 0, NULL };

static int capget2(struct __user_cap_data_struct d[2])
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	return (int)syscall(SYS_capget, &h, d);
}

static int capset2(struct __user_cap_data_struct d[2])
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	return (int)syscall(SYS_capset, &h, d);
}

#define BIT(c) (1u << (c))

static void verify(void)
{
	uid_t r, e, s;
	gid_t gr, ge, gs;
	gid_t groups[8];
	struct __user_cap_data_struct d[2];

	getresuid(&r, &e, &s);
	CHECK(r == 1000 && e == 1001 && s == 1002, "uids %d %d %d", r, e, s);
	getresgid(&gr, &ge, &gs);
	CHECK(gr == 2000 && ge == 2001 && gs == 2002, "gids %d %d %d", gr, ge, gs);
	int n = getgroups(8, groups);
	CHECK(n == 2 && groups[0] == 100 && groups[1] == 200, "groups (%d)", n);
	CHECK(setfsuid(-1) == 1001, "fsuid %d", setfsuid(-1));
	capget2(d);
	CHECK(d[0].effective == BIT(CAP_NET_BIND_SERVICE) && d[0].permitted == (BIT(CAP_NET_BIND_SERVICE) | BIT(CAP_KILL)) &&
		      d[0].inheritable == BIT(CAP_NET_BIND_SERVICE) && d[1].effective == 0 && d[1].permitted == 0,
	      "caps eff %#x prm %#x inh %#x", d[0].effective, d[0].permitted, d[0].inheritable);
	CHECK(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, CAP_NET_BIND_SERVICE, 0, 0) == 1, "ambient cap");
	CHECK(prctl(PR_CAPBSET_READ, CAP_SYS_BOOT) == 0 && prctl(PR_CAPBSET_READ, CAP_KILL) == 1, "bounding set");
	CHECK(prctl(PR_GET_SECUREBITS) == 0, "securebits %#x", prctl(PR_GET_SECUREBITS));
	CHECK(personality(0xffffffff) == ADDR_NO_RANDOMIZE, "personality %#x", personality(0xffffffff));
	CHECK(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1, "no_new_privs");
	CHECK(prctl(PR_GET_DUMPABLE) == 1, "dumpable %d", prctl(PR_GET_DUMPABLE));
	int pds = 0;
	prctl(PR_GET_PDEATHSIG, &pds);
	CHECK(pds == SIGHUP, "pdeathsig %d", pds);
	CHECK(prctl(PR_GET_TIMERSLACK) == 123456, "timerslack %d", prctl(PR_GET_TIMERSLACK));
	errno = 0;
	CHECK(getpriority(PRIO_PROCESS, 0) == 5 && errno == 0, "nice %d", getpriority(PRIO_PROCESS, 0));
	CHECK(sched_getscheduler(0) == SCHED_BATCH, "policy %d", sched_getscheduler(0));
	int sr = 0;
	prctl(PR_GET_CHILD_SUBREAPER, &sr);
	CHECK(sr == 1, "child subreaper %d", sr);
	struct robust *head = NULL;
	size_t len = 0;
	syscall(SYS_get_robust_list, 0, &head, &len);
	CHECK(head == &robust_head && len == sizeof(robust_head), "robust list %p %zu", (void *)head, len);
	errno = 0;
	CHECK(sethostname("x", 1) == -1 && errno == 42, "seccomp filter: sethostname errno %d", errno);
	CHECK(getpid() > 0, "getpid");
}

int main(int argc, char **argv)
{
	struct __user_cap_data_struct d[2];
	gid_t groups[2] = { 100, 200 };

	fixture_init(argc, argv);
	if (geteuid() != 0) {
		out("NOTROOT\n");
		return 77;
	}
	if (prctl(PR_CAPBSET_DROP, CAP_SYS_BOOT))
		die("capbset drop");
	if (prctl(PR_SET_KEEPCAPS, 1))
		die("keepcaps");
	if (setgroups(2, groups) || setresgid(2000, 2001, 2002) || setresuid(1000, 1001, 1002))
		die("set ids");
	memset(d, 0, sizeof(d));
	d[0].permitted = BIT(CAP_NET_BIND_SERVICE) | BIT(CAP_KILL);
	d[0].effective = BIT(CAP_NET_BIND_SERVICE);
	d[0].inheritable = BIT(CAP_NET_BIND_SERVICE);
	if (capset2(d))
		die("capset");
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_BIND_SERVICE, 0, 0))
		die("ambient");
	if (prctl(PR_SET_KEEPCAPS, 0))
		die("keepcaps off");
	personality(ADDR_NO_RANDOMIZE);
	prctl(PR_SET_DUMPABLE, 1);
	prctl(PR_SET_PDEATHSIG, SIGHUP);
	prctl(PR_SET_TIMERSLACK, 123456);
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	setpriority(PRIO_PROCESS, 0, 5);
	struct sched_param sp = { 0 };
	if (sched_setscheduler(0, SCHED_BATCH, &sp))
		die("sched_setscheduler");
	syscall(SYS_set_robust_list, &robust_head, sizeof(robust_head));
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		die("no_new_privs");
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_sethostname, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 42),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { sizeof(f) / sizeof(f[0]), f };
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog))
		die("seccomp");
	out("READY counter=%p\n", (void *)&counter);
	for (;;) {
		counter++;
		if (check_flag) {
			check_flag = 0;
			verify();
			report();
		}
		sleep_ms(5);
	}
}
