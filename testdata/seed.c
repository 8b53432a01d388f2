/*
 * seed: the scenario of the original 2008 checkpoint/restart patches.
 * Opens WORKDIR/hello.txt with stdio, writes and flushes "hello, world!\n",
 * then sleeps until SIGUSR1; then writes "world, hello!\n", closes the file,
 * reports "OK counter=N" and exits 0.  Expected final file content:
 * "hello, world!\nworld, hello!\n".
 */
#include "fixture.h"

int main(int argc, char **argv)
{
	FILE *f;

	fixture_init(argc, argv);
	f = fopen(wpath("hello.txt"), "w+");
	if (!f)
		die("fopen hello.txt");
	fputs("hello, world!\n", f);
	fflush(f);

	out("READY file=hello.txt fd=%d counter=%p\n", fileno(f),
	    (void *)&counter);
	while (!check_flag) {
		counter++;
		sleep_ms(5);
	}
	fputs("world, hello!\n", f);
	if (fclose(f)) {
		out("FAIL fclose: %s\n", strerror(errno));
		exit(1);
	}
	out("OK counter=%lu\n", counter);
	exit(0);
}
