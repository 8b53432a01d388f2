/*
 * pthreads: a multi-threaded fixture (build with -pthread).
 *
 * main + NWORKERS pthreads.  Worker i:
 *   - increments wcount[i] in a loop; workers 0..2 sleep 2+i ms per
 *     iteration, worker SPINNER (3) spins in user space without syscalls;
 *   - has a __thread value tls_val = 1000+i;
 *   - is named "worker-i" (pthread_setname_np on itself);
 *   - runs with the signal mask {SIGUSR1, SIGUSR2, SIGRTMIN+i} (set atomically
 *     at creation with pthread_attr_setsigmask_np), so that only main
 *     receives the process-directed SIGUSR1/SIGUSR2.
 *
 * SIGUSR1: main asks every worker to check itself (per-worker request
 * sequence number); each worker answers through res[i] with its TLS value,
 * its name (prctl PR_GET_NAME), its blocked mask (pthread_sigmask query),
 * gettid() and pthread_self().  main compares them with what was recorded
 * at start, cross-checks /proc/self/task/TID/comm, checks its own mask is
 * empty, and checks that every worker counter increased since the previous
 * check (waiting up to 2 s for progress).  Then "OK counter=N" / "FAIL why".
 *
 * SIGUSR2: main sets a stop flag, joins the workers, writes "BYE counter=N"
 * and exits 0.
 *
 * READY threads=4 tids=T0,T1,T2,T3 spinner=3 rtmin=R wcount=0xADDR counter=0xADDR
 */
#include "fixture.h"

#include <pthread.h>
#include <sys/prctl.h>

#ifndef NWORKERS
#define NWORKERS 4
#endif
#define SPINNER 3

struct result {
	unsigned long done; /* request seq this result answers (release) */
	int tls;
	char name[16];
	uint64_t mask; /* bit s-1 set if signal s is blocked */
	pid_t tid;
	pid_t tid0; /* gettid() kept on the worker's stack since start */
	pthread_t self;
};

static __thread int tls_val;

static pthread_t threads[NWORKERS];
static pid_t wtid[NWORKERS];
static volatile unsigned long wcount[NWORKERS];
static unsigned long check_req[NWORKERS];
static struct result res[NWORKERS];
static unsigned long last_wcount[NWORKERS];
static unsigned long check_seq;
static int nstarted;
static int stop_workers;
static volatile sig_atomic_t stop_flag;

#define LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

static uint64_t mask_bits(const sigset_t *set)
{
	uint64_t m = 0;
	for (int s = 1; s < NSIG && s <= 64; s++)
		if (sigismember(set, s) == 1)
			m |= 1ULL << (s - 1);
	return m;
}

static void expected_mask(int i, sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGUSR1);
	sigaddset(set, SIGUSR2);
	sigaddset(set, SIGRTMIN + i);
}

static void self_check(int i, pid_t tid0, unsigned long req)
{
	struct result *r = &res[i];
	sigset_t cur;

	r->tls = tls_val;
	memset(r->name, 0, sizeof(r->name));
	if (prctl(PR_GET_NAME, r->name, 0, 0, 0))
		strcpy(r->name, "(prctl failed)");
	sigemptyset(&cur);
	if (pthread_sigmask(SIG_BLOCK, NULL, &cur))
		r->mask = ~0ULL;
	else
		r->mask = mask_bits(&cur);
	r->tid = gettid();
	r->tid0 = tid0;
	r->self = pthread_self();
	STORE(&r->done, req);
}

static void *worker(void *arg)
{
	int i = (int)(intptr_t)arg;
	pid_t tid0 = gettid();
	unsigned long handled = 0;
	char name[16];

	tls_val = 1000 + i;
	wtid[i] = tid0;
	snprintf(name, sizeof(name), "worker-%d", i);
	pthread_setname_np(pthread_self(), name);
	__atomic_add_fetch(&nstarted, 1, __ATOMIC_ACQ_REL);

	while (!LOAD(&stop_workers)) {
		__atomic_add_fetch(&wcount[i], 1, __ATOMIC_RELAXED);
		unsigned long req = LOAD(&check_req[i]);
		if (req != handled) {
			self_check(i, tid0, req);
			handled = req;
		}
		if (i == SPINNER)
			__builtin_ia32_pause();
		else
			sleep_ms(2 + i);
	}
	return NULL;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Read /proc/self/task/TID/comm into buf (without the newline). */
static int task_comm(pid_t tid, char *buf, size_t len)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/task/%d/comm", (int)tid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, len - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	if (buf[n - 1] == '\n')
		buf[n - 1] = 0;
	return 0;
}

static void verify(void)
{
	sigset_t cur, want;
	char name[16], comm[64];
	int answered[NWORKERS] = { 0 };

	/* main itself must block nothing (it handles SIGUSR1/SIGUSR2). */
	CHECK(pthread_sigmask(SIG_BLOCK, NULL, &cur) == 0, "main: pthread_sigmask query");
	CHECK(mask_bits(&cur) == 0, "main: blocked mask %#llx, want 0",
	      (unsigned long long)mask_bits(&cur));

	unsigned long seq = ++check_seq;
	for (int i = 0; i < NWORKERS; i++)
		STORE(&check_req[i], seq);

	double deadline = now() + 3.0;
	for (int left = NWORKERS; left > 0 && now() < deadline;) {
		for (int i = 0; i < NWORKERS; i++)
			if (!answered[i] && LOAD(&res[i].done) == seq) {
				answered[i] = 1;
				left--;
			}
		if (left)
			sleep_ms(1);
	}

	for (int i = 0; i < NWORKERS; i++) {
		struct result *r = &res[i];
		if (!answered[i]) {
			CHECK(0, "worker %d (tid %d) did not answer the check request within 3s",
			      i, (int)wtid[i]);
			continue;
		}
		snprintf(name, sizeof(name), "worker-%d", i);
		expected_mask(i, &want);
		CHECK(r->tls == 1000 + i, "worker %d: tls_val %d, want %d", i, r->tls, 1000 + i);
		CHECK(strcmp(r->name, name) == 0, "worker %d: name %s, want %s", i, r->name, name);
		CHECK(r->mask == mask_bits(&want), "worker %d: blocked mask %#llx, want %#llx", i,
		      (unsigned long long)r->mask, (unsigned long long)mask_bits(&want));
		CHECK(r->tid == wtid[i], "worker %d: gettid %d, recorded %d", i, (int)r->tid,
		      (int)wtid[i]);
		CHECK(r->tid0 == wtid[i], "worker %d: tid on its stack %d, recorded %d", i,
		      (int)r->tid0, (int)wtid[i]);
		CHECK(pthread_equal(r->self, threads[i]), "worker %d: pthread_self %#lx, want %#lx",
		      i, (unsigned long)r->self, (unsigned long)threads[i]);
		comm[0] = 0;
		CHECK(task_comm(wtid[i], comm, sizeof(comm)) == 0,
		      "worker %d: cannot read /proc/self/task/%d/comm", i, (int)wtid[i]);
		CHECK(strcmp(comm, name) == 0, "worker %d: /proc comm %s, want %s", i, comm, name);
	}

	/* Every worker must make progress (wait up to 2 s for it). */
	deadline = now() + 2.0;
	for (int i = 0; i < NWORKERS; i++) {
		unsigned long c;
		while ((c = __atomic_load_n(&wcount[i], __ATOMIC_RELAXED)) <= last_wcount[i] &&
		       now() < deadline)
			sleep_ms(1);
		CHECK(c > last_wcount[i], "worker %d: counter %lu did not increase (previous check %lu)",
		      i, c, last_wcount[i]);
		last_wcount[i] = c;
	}
}

static void on_usr2_stop(int sig)
{
	(void)sig;
	stop_flag = 1;
}

int main(int argc, char **argv)
{
	struct sigaction sa;
	pthread_attr_t attr;
	char tids[128];
	int n = 0;

	fixture_init(argc, argv);
	/* Replace fixture.h's exiting SIGUSR2 handler: stop and join first. */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr2_stop;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR2, &sa, NULL))
		die("sigaction SIGUSR2");

	for (int i = 0; i < NWORKERS; i++) {
		sigset_t set;
		expected_mask(i, &set);
		if (pthread_attr_init(&attr))
			die("pthread_attr_init");
		errno = pthread_attr_setsigmask_np(&attr, &set);
		if (errno)
			die("pthread_attr_setsigmask_np");
		errno = pthread_create(&threads[i], &attr, worker, (void *)(intptr_t)i);
		if (errno)
			die("pthread_create %d", i);
		pthread_attr_destroy(&attr);
	}
	/* Wait until all workers recorded their tid, named themselves and ran. */
	for (;;) {
		int ready = LOAD(&nstarted) == NWORKERS;
		for (int i = 0; ready && i < NWORKERS; i++)
			ready = __atomic_load_n(&wcount[i], __ATOMIC_RELAXED) > 0;
		if (ready)
			break;
		sleep_ms(1);
	}
	for (int i = 0; i < NWORKERS; i++)
		n += snprintf(tids + n, sizeof(tids) - n, "%s%d", i ? "," : "", (int)wtid[i]);
	out("READY threads=%d tids=%s spinner=%d rtmin=%d wcount=%p counter=%p\n", NWORKERS,
	    tids, SPINNER, SIGRTMIN, (void *)wcount, (void *)&counter);

	for (;;) {
		counter++;
		if (stop_flag)
			break;
		if (check_flag) {
			check_flag = 0;
			failed = 0;
			verify();
			report();
		}
		sleep_ms(5);
	}
	STORE(&stop_workers, 1);
	for (int i = 0; i < NWORKERS; i++)
		pthread_join(threads[i], NULL);
	out("BYE counter=%lu\n", counter);
	return 0;
}
