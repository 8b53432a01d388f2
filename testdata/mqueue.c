/*
 * mqueue: POSIX message queues.
 *   /crtest-PID-a made with maxmsg 5, msgsize 100, mode 0640, opened
 *   O_RDWR|O_NONBLOCK (fd qa) and a second time O_WRONLY (fd qw, another
 *   description); /crtest-PID-b with the default attributes, O_RDONLY (qb).
 *   Args: "empty" (default) leaves them empty; "full" leaves 2 messages in
 *   /crtest-PID-a; "notify" registers a SIGEV_SIGNAL notification on it.
 * Verify: mq_getattr of each (flags, maxmsg, msgsize, no message), the
 * access modes, and a message sent through qw comes out of qa.
 * READY names=/crtest-PID-a,/crtest-PID-b
 */
#include "fixture.h"
#include <mqueue.h>

static mqd_t qa, qw, qb;
static long def_maxmsg, def_msgsize;

static void attr_is(mqd_t q, const char *what, long flags, long maxmsg, long msgsize)
{
	struct mq_attr a;
	CHECK(mq_getattr(q, &a) == 0, "mq_getattr %s", what);
	CHECK(a.mq_flags == flags && a.mq_maxmsg == maxmsg && a.mq_msgsize == msgsize && a.mq_curmsgs == 0,
	      "%s: flags %ld maxmsg %ld msgsize %ld curmsgs %ld", what, a.mq_flags, a.mq_maxmsg, a.mq_msgsize, a.mq_curmsgs);
}

static void verify(void)
{
	char buf[100];
	unsigned prio = 0;

	attr_is(qa, "a (rdwr)", O_NONBLOCK, 5, 100);
	attr_is(qw, "a (wronly)", 0, 5, 100);
	attr_is(qb, "b", 0, def_maxmsg, def_msgsize);
	CHECK((fcntl(qa, F_GETFL) & O_ACCMODE) == O_RDWR, "qa access mode");
	CHECK((fcntl(qw, F_GETFL) & O_ACCMODE) == O_WRONLY, "qw access mode");
	CHECK((fcntl(qb, F_GETFL) & O_ACCMODE) == O_RDONLY, "qb access mode");
	CHECK(mq_send(qw, "ping", 4, 3) == 0, "mq_send");
	CHECK(mq_receive(qa, buf, sizeof(buf), &prio) == 4 && memcmp(buf, "ping", 4) == 0 && prio == 3, "mq_receive");
}

int main(int argc, char **argv)
{
	struct mq_attr a = { .mq_maxmsg = 5, .mq_msgsize = 100 }, d;
	char na[64], nb[64];
	const char *mode = argc > 2 ? argv[2] : "empty";

	fixture_init(argc, argv);
	snprintf(na, sizeof(na), "/crtest-%d-a", getpid());
	snprintf(nb, sizeof(nb), "/crtest-%d-b", getpid());
	umask(0);
	qa = mq_open(na, O_RDWR | O_NONBLOCK | O_CREAT | O_EXCL, 0640, &a);
	qw = mq_open(na, O_WRONLY);
	qb = mq_open(nb, O_RDONLY | O_CREAT | O_EXCL, 0600, NULL);
	if (qa < 0 || qw < 0 || qb < 0)
		die("mq_open");
	if (mq_getattr(qb, &d))
		die("mq_getattr");
	def_maxmsg = d.mq_maxmsg;
	def_msgsize = d.mq_msgsize;
	if (!strcmp(mode, "full")) {
		if (mq_send(qw, "one", 3, 1) || mq_send(qw, "two", 3, 2))
			die("mq_send");
	} else if (!strcmp(mode, "notify")) {
		struct sigevent ev = { .sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGUSR1 };
		if (mq_notify(qa, &ev))
			die("mq_notify");
	}
	out("READY names=%s,%s counter=%p\n", na, nb, (void *)&counter);
	fixture_loop(verify, 5);
}
