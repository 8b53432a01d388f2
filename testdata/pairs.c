/*
 * pairs: a parent P (this) and a child C exchanging increasing sequences:
 *   C -> P over a pipe:                 C's sequence;
 *   P -> C over a SOCK_STREAM socketpair: P's sequence;
 *   C -> P over a SOCK_DGRAM socketpair:  C acknowledges each number it
 *                                        got from P, in order.
 * Everyone checks continuity on the fly (no gap, no repeat); C reports a
 * break in an ack carrying 0. P reads every 5 ms, so messages are usually
 * waiting in the queues when a dump comes.
 */
#include "fixture.h"
#include <sys/prctl.h>
#include <sys/socket.h>

static int pp[2], st[2], dg[2];
static pid_t c;
static uint64_t from_c, acked, sent;

static void child(void)
{
	uint64_t seq = 0, got = 0, v;
	close(pp[0]);
	close(st[0]);
	close(dg[0]);
	fcntl(st[1], F_SETFL, O_NONBLOCK);
	for (;;) {
		seq++;
		if (write(pp[1], &seq, 8) != 8)
			_exit(3);
		while (read(st[1], &v, 8) == 8) {
			uint64_t ack = v == got + 1 ? v : 0;
			got = v;
			if (send(dg[1], &ack, 8, 0) != 8)
				_exit(4);
		}
		sleep_ms(3);
	}
}

static void pump(void)
{
	uint64_t v;
	while (read(pp[0], &v, 8) == 8) {
		CHECK(v == from_c + 1, "pipe: %llu after %llu", (unsigned long long)v, (unsigned long long)from_c);
		from_c = v;
	}
	while (recv(dg[0], &v, 8, MSG_DONTWAIT) == 8) {
		CHECK(v != 0 && v == acked + 1, "dgram ack %llu after %llu", (unsigned long long)v, (unsigned long long)acked);
		acked = v;
	}
	sent++;
	CHECK(write(st[0], &sent, 8) == 8, "stream write");
}

static void verify(void)
{
	CHECK(from_c > 0 && acked > 0, "nothing exchanged yet");
	CHECK(kill(c, 0) == 0, "C is gone");
}

int main(int argc, char **argv)
{
	fixture_init(argc, argv);
	if (pipe(pp) || socketpair(AF_UNIX, SOCK_STREAM, 0, st) || socketpair(AF_UNIX, SOCK_DGRAM, 0, dg))
		die("setup");
	if ((c = fork()) == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		signal(SIGUSR1, SIG_IGN);
		signal(SIGUSR2, SIG_DFL);
		child();
	}
	close(pp[1]);
	close(st[1]);
	close(dg[1]);
	fcntl(pp[0], F_SETFL, O_NONBLOCK);
	fcntl(dg[0], F_SETFL, O_NONBLOCK);
	for (int i = 0; i < 40 && (from_c == 0 || acked == 0); i++) {
		pump();
		sleep_ms(5);
	}
	out("READY c=%d counter=%p\n", c, (void *)&counter);
	for (;;) {
		counter++;
		pump();
		if (check_flag) {
			check_flag = 0;
			verify();
			report();
		}
		sleep_ms(5);
	}
}
