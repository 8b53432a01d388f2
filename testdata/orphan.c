/*
 * orphan: a session leader with an orphaned grandchild still in its session.
 *   P (this, a session leader) forks C, which forks G and exits; P reaps C.
 *   G (named "orphan-g") is reparented away (to the nearest subreaper, the
 *   test process) but stays in P's session and process group, so P's pid
 *   stays in use as a session id after P is gone.
 * READY g=PID counter=0xADDR
 */
#include "fixture.h"
#include <sys/prctl.h>
#include <sys/wait.h>

static void nothing(void) {}

int main(int argc, char **argv)
{
	pid_t c, g = 0;

	fixture_init(argc, argv);
	if ((c = fork()) == 0) {
		if (fork() == 0) {
			prctl(PR_SET_NAME, "orphan-g");
			signal(SIGUSR1, SIG_IGN);
			signal(SIGUSR2, SIG_DFL);
			for (;;)
				pause();
		}
		_exit(0);
	}
	waitpid(c, NULL, 0);
	/* C is gone; find G among the session's members. */
	for (int tries = 0; tries < 1000 && !g; tries++) {
		char path[64];
		for (pid_t x = c + 1; x < c + 64 && !g; x++) {
			snprintf(path, sizeof(path), "/proc/%d/comm", x);
			FILE *f = fopen(path, "r");
			char name[32] = "";
			if (!f)
				continue;
			if (fgets(name, sizeof(name), f) && strcmp(name, "orphan-g\n") == 0 && getsid(x) == getpid())
				g = x;
			fclose(f);
		}
		if (!g)
			sleep_ms(1);
	}
	if (!g)
		die("grandchild not found");
	out("READY g=%d counter=%p\n", g, (void *)&counter);
	fixture_loop(nothing, 5);
}
