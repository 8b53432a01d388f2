/*
 * sigstate: pending signals (standard and real-time, private and shared,
 * with values and queue order), an alternate signal stack, interval timers
 * and POSIX timers that keep ticking.
 *
 * Pending (all blocked): SIGRTMIN+1 twice to the process (values 111, 222),
 * SIGRTMIN+2 to the thread (value 333), SIGWINCH to the process.
 * Ticking: ITIMER_REAL every 20 ms (SIGALRM), a CLOCK_MONOTONIC POSIX timer
 * every 10 ms (SIGRTMIN+4, sigev value 0x5eed), a disarmed POSIX timer, and
 * ITIMER_VIRTUAL armed for 1000 s.
 * A check consumes the pending signals to verify them and queues them again.
 */
#include "fixture.h"
#include <sys/time.h>

static volatile unsigned long alrm_ticks, rt_ticks;
static timer_t tick_timer, idle_timer;
static char altstack[65536];

static void on_alrm(int sig) { (void)sig; alrm_ticks++; }
static void on_rt(int sig, siginfo_t *si, void *uc)
{
	(void)sig; (void)uc;
	if (si->si_value.sival_ptr == (void *)0x5eed)
		rt_ticks++;
}

static void queue_pending(void)
{
	union sigval v;
	siginfo_t si;

	v.sival_int = 111;
	if (sigqueue(getpid(), SIGRTMIN + 1, v))
		die("sigqueue");
	v.sival_int = 222;
	if (sigqueue(getpid(), SIGRTMIN + 1, v))
		die("sigqueue");
	memset(&si, 0, sizeof(si));
	si.si_signo = SIGRTMIN + 2;
	si.si_code = SI_QUEUE;
	si.si_pid = getpid();
	si.si_uid = getuid();
	si.si_value.sival_int = 333;
	if (syscall(SYS_rt_tgsigqueueinfo, getpid(), gettid(), SIGRTMIN + 2, &si))
		die("rt_tgsigqueueinfo");
	if (kill(getpid(), SIGWINCH))
		die("kill");
}

static void verify(void)
{
	sigset_t set, pend;
	siginfo_t si;
	struct timespec zero = { 0, 0 };
	stack_t ss;
	struct itimerval itv;
	struct itimerspec its;

	sigpending(&pend);
	CHECK(sigismember(&pend, SIGRTMIN + 1) && sigismember(&pend, SIGRTMIN + 2) &&
		      sigismember(&pend, SIGWINCH), "pending set is wrong");
	sigemptyset(&set);
	sigaddset(&set, SIGRTMIN + 1);
	int s = sigtimedwait(&set, &si, &zero);
	CHECK(s == SIGRTMIN + 1 && si.si_value.sival_int == 111 && si.si_code == SI_QUEUE, "first RT signal: %d value %d", s, si.si_value.sival_int);
	s = sigtimedwait(&set, &si, &zero);
	CHECK(s == SIGRTMIN + 1 && si.si_value.sival_int == 222, "second RT signal: %d value %d", s, si.si_value.sival_int);
	s = sigtimedwait(&set, &si, &zero);
	CHECK(s < 0, "a third SIGRTMIN+1 is pending");
	sigemptyset(&set);
	sigaddset(&set, SIGRTMIN + 2);
	s = sigtimedwait(&set, &si, &zero);
	CHECK(s == SIGRTMIN + 2 && si.si_value.sival_int == 333, "thread RT signal: %d value %d", s, si.si_value.sival_int);
	sigemptyset(&set);
	sigaddset(&set, SIGWINCH);
	s = sigtimedwait(&set, &si, &zero);
	CHECK(s == SIGWINCH && si.si_code == SI_USER && si.si_pid == getpid(), "SIGWINCH: %d code %d pid %d", s, si.si_code, si.si_pid);
	queue_pending();

	CHECK(sigaltstack(NULL, &ss) == 0 && ss.ss_sp == altstack && ss.ss_size == sizeof(altstack) && ss.ss_flags == 0,
	      "sigaltstack sp %p size %zu flags %d", ss.ss_sp, ss.ss_size, ss.ss_flags);

	getitimer(ITIMER_VIRTUAL, &itv);
	CHECK(itv.it_value.tv_sec > 900 && itv.it_interval.tv_sec == 1000, "ITIMER_VIRTUAL %ld/%ld", (long)itv.it_value.tv_sec, (long)itv.it_interval.tv_sec);
	getitimer(ITIMER_REAL, &itv);
	CHECK(itv.it_interval.tv_usec == 20000 && itv.it_interval.tv_sec == 0, "ITIMER_REAL interval %ld", (long)itv.it_interval.tv_usec);
	CHECK(timer_gettime(tick_timer, &its) == 0 && its.it_interval.tv_nsec == 10000000, "tick timer interval");
	CHECK(timer_gettime(idle_timer, &its) == 0 && its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0, "idle timer armed or gone");

	/* Ticks keep coming at the right rate: ~10 SIGALRM and ~20 RT in 200 ms. */
	unsigned long a0 = alrm_ticks, r0 = rt_ticks;
	struct timespec ts = { 0, 200 * 1000000L };
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
	unsigned long da = alrm_ticks - a0, dr = rt_ticks - r0;
	CHECK(da >= 3 && da <= 20, "SIGALRM ticks in 200 ms: %lu", da);
	CHECK(dr >= 6 && dr <= 40, "timer ticks in 200 ms: %lu", dr);
}

int main(int argc, char **argv)
{
	struct sigaction sa;
	sigset_t set;
	stack_t ss = { .ss_sp = altstack, .ss_size = sizeof(altstack), .ss_flags = 0 };
	struct sigevent ev;
	struct itimerval itv;
	struct itimerspec its;

	fixture_init(argc, argv);
	sigemptyset(&set);
	sigaddset(&set, SIGRTMIN + 1);
	sigaddset(&set, SIGRTMIN + 2);
	sigaddset(&set, SIGWINCH);
	sigprocmask(SIG_BLOCK, &set, NULL);
	if (sigaltstack(&ss, NULL))
		die("sigaltstack");

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_alrm;
	sa.sa_flags = SA_RESTART | SA_ONSTACK;
	sigaction(SIGALRM, &sa, NULL);
	sa.sa_sigaction = on_rt;
	sa.sa_flags = SA_RESTART | SA_SIGINFO;
	sigaction(SIGRTMIN + 4, &sa, NULL);

	memset(&ev, 0, sizeof(ev));
	ev.sigev_notify = SIGEV_SIGNAL;
	ev.sigev_signo = SIGRTMIN + 4;
	ev.sigev_value.sival_ptr = (void *)0x5eed;
	if (timer_create(CLOCK_MONOTONIC, &ev, &tick_timer))
		die("timer_create");
	ev.sigev_signo = SIGRTMIN + 5;
	if (timer_create(CLOCK_REALTIME, &ev, &idle_timer))
		die("timer_create");
	its.it_value.tv_sec = 0;
	its.it_value.tv_nsec = 10000000;
	its.it_interval = its.it_value;
	timer_settime(tick_timer, 0, &its, NULL);
	itv.it_value.tv_sec = 0;
	itv.it_value.tv_usec = 20000;
	itv.it_interval = itv.it_value;
	setitimer(ITIMER_REAL, &itv, NULL);
	itv.it_value.tv_sec = 1000;
	itv.it_value.tv_usec = 0;
	itv.it_interval = itv.it_value;
	setitimer(ITIMER_VIRTUAL, &itv, NULL);
	queue_pending();

	out("READY tick_timer=%ld idle_timer=%ld altstack=%p counter=%p\n", (long)tick_timer, (long)idle_timer,
	    (void *)altstack, (void *)&counter);
	for (;;) {
		counter++;
		if (check_flag) {
			check_flag = 0;
			verify();
			report();
		}
		sleep_ms(5);
	}
}
