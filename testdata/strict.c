/*
 * strict: seccomp strict mode (only read, write, _exit and sigreturn are
 * allowed).  Spins, answering SIGUSR1 with write(2) only.
 */
#include "fixture.h"
#include <linux/seccomp.h>
#include <sys/prctl.h>

static volatile sig_atomic_t bye;
static void on_bye(int sig) { (void)sig; bye = 1; }

static void say(const char *prefix)
{
	char buf[64];
	unsigned long v = counter;
	char digits[24];
	int n = 0, p = 0;
	while (*prefix)
		buf[p++] = *prefix++;
	do {
		digits[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n > 0)
		buf[p++] = digits[--n];
	buf[p++] = '\n';
	write(1, buf, (size_t)p);
}

int main(int argc, char **argv)
{
	struct sigaction sa;

	fixture_init(argc, argv);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_bye;
	sigaction(SIGUSR2, &sa, NULL);
	out("READY counter=%p\n", (void *)&counter);
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT))
		die("strict mode");
	for (;;) {
		counter++;
		if (check_flag) {
			check_flag = 0;
			say("OK counter=");
		}
		if (bye) {
			say("BYE counter=");
			syscall(SYS_exit, 0);
		}
	}
}
