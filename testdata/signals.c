/*
 * signals: signal dispositions and the blocked mask.
 *   SIGUSR1  check handler, SA_RESTART (fixture.h); SIGUSR2 exit handler
 *   SIGHUP   on_hup, SA_SIGINFO|SA_NODEFER, sa_mask {SIGINT}
 *   SIGPIPE  SIG_IGN
 *   SIGALRM  on_alrm, SA_RESETHAND, sa_mask {SIGQUIT, SIGRTMIN+5}
 *   SIGTERM  SIG_DFL
 *   blocked: SIGWINCH, SIGRTMIN+3
 */
#include "fixture.h"

#ifndef SA_RESTORER
#define SA_RESTORER 0x04000000
#endif

struct disp {
	int sig;
	void *handler;
	int flags;
	int mask[3]; /* 0-terminated */
};

static struct disp want[8];
static int nwant;

static void on_hup(int sig, siginfo_t *si, void *uc)
{
	(void)sig, (void)si, (void)uc;
}

static void on_alrm(int sig)
{
	(void)sig;
}

static void install(int sig, void *handler, int flags, int m1, int m2)
{
	struct sigaction sa;
	struct disp *d = &want[nwant++];

	memset(&sa, 0, sizeof(sa));
	if (flags & SA_SIGINFO)
		sa.sa_sigaction = handler;
	else
		sa.sa_handler = handler;
	sa.sa_flags = flags;
	sigemptyset(&sa.sa_mask);
	if (m1)
		sigaddset(&sa.sa_mask, m1);
	if (m2)
		sigaddset(&sa.sa_mask, m2);
	if (sig && sigaction(sig, &sa, NULL))
		die("sigaction %d", sig);
	*d = (struct disp){ sig, handler, flags, { m1, m2, 0 } };
}

/* Does set contain exactly the signals of list? */
static int set_equals(const sigset_t *set, const int *list)
{
	for (int s = 1; s < NSIG; s++) {
		int in = 0;
		for (const int *l = list; *l; l++)
			in |= *l == s;
		if ((sigismember(set, s) == 1) != in)
			return 0;
	}
	return 1;
}

static void verify(void)
{
	struct sigaction old;
	sigset_t cur, pend;
	int blocked[] = { SIGWINCH, SIGRTMIN + 3, 0 };

	for (int i = 0; i < nwant; i++) {
		struct disp *d = &want[i];
		int s = d->sig;
		CHECK(sigaction(s, NULL, &old) == 0, "sigaction(%d) query", s);
		void *h = (old.sa_flags & SA_SIGINFO) ? (void *)old.sa_sigaction
						      : (void *)old.sa_handler;
		CHECK(h == d->handler, "sig %d handler %p want %p", s, h,
		      d->handler);
		CHECK((old.sa_flags & ~SA_RESTORER) == d->flags,
		      "sig %d flags %#x want %#x", s,
		      (unsigned)(old.sa_flags & ~SA_RESTORER), d->flags);
		CHECK(set_equals(&old.sa_mask, d->mask), "sig %d sa_mask differs",
		      s);
	}
	CHECK(sigprocmask(SIG_BLOCK, NULL, &cur) == 0, "sigprocmask");
	CHECK(set_equals(&cur, blocked), "blocked mask differs");
	CHECK(sigpending(&pend) == 0 && sigisemptyset(&pend), "signal pending");
}

int main(int argc, char **argv)
{
	sigset_t set;

	fixture_init(argc, argv);

	/* Record what fixture_init installed for SIGUSR1/SIGUSR2. */
	install(0, (void *)on_usr1, SA_RESTART, 0, 0);
	want[0].sig = SIGUSR1;
	install(0, (void *)on_usr2, SA_RESTART, 0, 0);
	want[1].sig = SIGUSR2;

	install(SIGHUP, (void *)on_hup, SA_SIGINFO | SA_NODEFER, SIGINT, 0);
	install(SIGPIPE, (void *)SIG_IGN, 0, 0, 0);
	install(SIGALRM, (void *)on_alrm, SA_RESETHAND, SIGQUIT, SIGRTMIN + 5);
	install(SIGTERM, (void *)SIG_DFL, 0, 0, 0);

	sigemptyset(&set);
	sigaddset(&set, SIGWINCH);
	sigaddset(&set, SIGRTMIN + 3);
	if (sigprocmask(SIG_BLOCK, &set, NULL))
		die("sigprocmask");

	out("READY on_usr1=%p on_hup=%p on_alrm=%p sigrtmin=%d "
	    "blocked=%d,%d counter=%p\n",
	    (void *)on_usr1, (void *)on_hup, (void *)on_alrm, SIGRTMIN, SIGWINCH,
	    SIGRTMIN + 3, (void *)&counter);
	fixture_loop(verify, 5);
}
