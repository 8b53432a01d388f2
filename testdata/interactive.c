/*
 * interactive: a terminal program for the --shell-job test.  Reads lines
 * from stdin (a terminal) and answers each with "got <line> n=<N>", N
 * counting the lines so far; "quit" exits 0.  It does not use the fixture
 * protocol: it is driven through tmux.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(void)
{
	char line[256];
	unsigned long n = 0;

	printf("interactive ready pid=%d\n", getpid());
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin)) {
		line[strcspn(line, "\n")] = 0;
		if (strcmp(line, "quit") == 0)
			return 0;
		printf("got %s n=%lu\n", line, ++n);
		fflush(stdout);
	}
	return 3;
}
