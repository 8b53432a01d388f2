/*
 * forker: a tree of N processes for benchmarks: `forker WORKDIR N` forks
 * N-1 children that sleep (and die with their parent); the root follows
 * the fixture protocol and checks that they are all there.
 */
#include "fixture.h"
#include <sys/prctl.h>

static pid_t kids[1024];
static int nkids;

static void verify(void)
{
	for (int i = 0; i < nkids; i++)
		CHECK(kill(kids[i], 0) == 0, "child %d is gone", kids[i]);
}

int main(int argc, char **argv)
{
	int n = argc > 2 ? atoi(argv[2]) : 8;
	fixture_init(argc, argv);
	for (nkids = 0; nkids < n - 1 && nkids < 1024; nkids++) {
		pid_t p = fork();
		if (p < 0)
			die("fork");
		if (p == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			signal(SIGUSR1, SIG_IGN);
			signal(SIGUSR2, SIG_DFL);
			for (;;)
				pause();
		}
		kids[nkids] = p;
	}
	out("READY processes=%d counter=%p\n", n, (void *)&counter);
	fixture_loop(verify, 5);
}
