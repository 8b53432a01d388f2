/*
 * fd3writer: writes 0, 1, 2, ... one number a line to fd 3 every 10 ms,
 * with no other fd ever holding what fd 3 holds (a shell's `echo >&3`
 * moves fd 3 to fd 1 for each write). Not a protocol fixture.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(void)
{
	char buf[32];
	struct timespec ts = { 0, 10 * 1000 * 1000 };
	for (unsigned long i = 0;; i++) {
		int n = snprintf(buf, sizeof(buf), "%lu\n", i);
		if (write(3, buf, (size_t)n) != n)
			return 1;
		nanosleep(&ts, NULL);
	}
}
