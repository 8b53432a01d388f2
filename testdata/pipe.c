/*
 * pipe: holds both ends of a pipe (fds 3 and 4) so that the dumper can be
 * checked to refuse it.  Otherwise a normal sleeping fixture.
 */
#include "fixture.h"
#include <sys/stat.h>

static int p[2];

static void verify(void)
{
	struct stat st;

	for (int i = 0; i < 2; i++)
		CHECK(fstat(p[i], &st) == 0 && S_ISFIFO(st.st_mode),
		      "fd %d is not a pipe", p[i]);
}

int main(int argc, char **argv)
{
	fixture_init(argc, argv);
	if (pipe(p))
		die("pipe");
	out("READY pipe_r=%d pipe_w=%d counter=%p\n", p[0], p[1],
	    (void *)&counter);
	fixture_loop(verify, 5);
}
