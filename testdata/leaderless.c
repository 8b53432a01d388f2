/*
 * leaderless: a thread group whose main thread has exited.
 *   leaderless WORKDIR self: this process's main thread starts a worker and
 *     calls pthread_exit; the worker runs the standard loop (SIGUSR1 reaches
 *     it, the only live thread).
 *   leaderless WORKDIR child: this process forks a child that does the same;
 *     the child's worker sleeps in a loop.  This process runs the standard
 *     loop.
 * READY child=PID tid=TID counter=0xADDR (child=0 in self mode; tid is the
 * live worker's tid)
 */
#include "fixture.h"
#include <pthread.h>

static void nothing(void) {}
static volatile pid_t wtid;

static void *worker_self(void *arg)
{
	(void)arg;
	wtid = gettid();
	fixture_loop(nothing, 5);
	return NULL;
}

static void *worker_child(void *arg)
{
	(void)arg;
	wtid = gettid();
	for (;;)
		sleep_ms(5);
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t th;
	int p[2];

	fixture_init(argc, argv);
	if (argc > 2 && strcmp(argv[2], "child") == 0) {
		pid_t c, tid = 0;
		if (pipe(p))
			die("pipe");
		if ((c = fork()) == 0) {
			close(p[0]);
			signal(SIGUSR1, SIG_IGN);
			if (pthread_create(&th, NULL, worker_child, NULL))
				_exit(1);
			while (!wtid)
				sleep_ms(1);
			tid = wtid;
			if (write(p[1], &tid, sizeof(tid)) != sizeof(tid))
				_exit(1);
			close(p[1]);
			pthread_exit(NULL);
		}
		close(p[1]);
		if (read(p[0], &tid, sizeof(tid)) != sizeof(tid) || tid == 0)
			die("child tid");
		close(p[0]);
		/* wait until the child's main thread is a zombie */
		for (int i = 0; i < 1000; i++) {
			char path[64], buf[512];
			snprintf(path, sizeof(path), "/proc/%d/stat", c);
			FILE *f = fopen(path, "r");
			if (!f)
				die("child gone");
			size_t n = fread(buf, 1, sizeof(buf) - 1, f);
			fclose(f);
			buf[n] = 0;
			char *r = strrchr(buf, ')');
			if (r && r[2] == 'Z')
				break;
			sleep_ms(1);
		}
		out("READY child=%d tid=%d counter=%p\n", c, tid, (void *)&counter);
		fixture_loop(nothing, 5);
	}
	if (pthread_create(&th, NULL, worker_self, NULL))
		die("pthread_create");
	while (!wtid)
		sleep_ms(1);
	out("READY child=0 tid=%d counter=%p\n", wtid, (void *)&counter);
	pthread_exit(NULL);
}
