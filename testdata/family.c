/*
 * family: a small process tree.
 *   P (this, the root, a session leader) forks:
 *   A: same process group; every 5 ms writes a line to a file it shares
 *      with P (one open file description: a shared offset) and then sends
 *      the next sequence number to P over a pipe;
 *   B: its own process group; sleeps;
 *   Z: exits at once with status 7; P does not reap it (a zombie);
 *   S: stops itself (SIGSTOP) and stays stopped.
 * P writes a line to the shared file too each time it reads a number.
 * A check verifies: the numbers from A come with no gap and no repeat, the
 * shared file holds exactly the lines written (no line overwritten, so the
 * offset is still shared), Z is a zombie with status 7, B leads its own
 * group, A is in P's group and session.
 */
#include "fixture.h"
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define LINE 16
static int pfd[2], shared_fd;
static pid_t a, b, z, stopped;
static unsigned long last_seq, my_lines;

static void child_a(void)
{
	unsigned long seq = 0;
	char line[LINE + 1];
	for (;;) {
		seq++;
		snprintf(line, sizeof(line), "A %012lu\n", seq);
		if (write(shared_fd, line, LINE) != LINE)
			_exit(3);
		if (write(pfd[1], &seq, sizeof(seq)) != sizeof(seq))
			_exit(4);
		sleep_ms(5);
	}
}

static void drain(void)
{
	unsigned long seq;
	char line[LINE + 1];
	while (read(pfd[0], &seq, sizeof(seq)) == sizeof(seq)) {
		if (seq != last_seq + 1 && !failed) {
			failed = 1;
			snprintf(failmsg, sizeof(failmsg), "sequence from A jumped from %lu to %lu", last_seq, seq);
		}
		last_seq = seq;
		my_lines++;
		snprintf(line, sizeof(line), "P %012lu\n", my_lines);
		if (write(shared_fd, line, LINE) != LINE && !failed) {
			failed = 1;
			snprintf(failmsg, sizeof(failmsg), "write to the shared file: %s", strerror(errno));
		}
	}
}

static void verify(void)
{
	siginfo_t si;
	struct stat st;

	drain();
	CHECK(last_seq > 0, "no numbers from A");
	/* A may have written a line whose number is not read yet: allow one. */
	fstat(shared_fd, &st);
	long lines = st.st_size / LINE;
	CHECK(st.st_size % LINE == 0 && (unsigned long)lines >= last_seq + my_lines && (unsigned long)lines <= last_seq + my_lines + 1,
	      "shared file has %ld lines, expected %lu (offset not shared?)", lines, last_seq + my_lines);
	/* A writes all the time: compare offset and size between two writes. */
	off_t off = -1;
	for (int i = 0; i < 1000; i++) {
		off_t o1 = lseek(shared_fd, 0, SEEK_CUR);
		fstat(shared_fd, &st);
		if (lseek(shared_fd, 0, SEEK_CUR) == o1) {
			off = o1;
			break;
		}
	}
	CHECK(off == st.st_size, "shared offset %ld, size %ld", (long)off, (long)st.st_size);
	memset(&si, 0, sizeof(si));
	CHECK(waitid(P_PID, z, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == z && si.si_code == CLD_EXITED && si.si_status == 7,
	      "zombie %d: pid %d code %d status %d", z, si.si_pid, si.si_code, si.si_status);
	CHECK(getpgid(b) == b, "B's group %d", getpgid(b));
	CHECK(getpgid(a) == getpgid(0) && getsid(a) == getsid(0) && getsid(0) == getpid(), "A's group/session");
	CHECK(kill(a, 0) == 0 && kill(b, 0) == 0, "children gone");
}

static void on_bye(int sig)
{
	(void)sig;
	kill(a, SIGKILL);
	kill(b, SIGKILL);
	kill(stopped, SIGKILL);
	waitpid(stopped, NULL, 0);
	waitpid(a, NULL, 0);
	waitpid(b, NULL, 0);
	waitpid(z, NULL, 0);
	char buf[64];
	int n = snprintf(buf, sizeof(buf), "BYE counter=%lu\n", counter);
	write_all(buf, (size_t)n);
	_exit(0);
}

int main(int argc, char **argv)
{
	struct sigaction sa;

	fixture_init(argc, argv);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_bye;
	sigaction(SIGUSR2, &sa, NULL);
	shared_fd = open(wpath("shared.txt"), O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (shared_fd < 0 || pipe(pfd))
		die("setup");
	fcntl(pfd[0], F_SETFL, O_NONBLOCK);
	if ((a = fork()) == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		signal(SIGUSR1, SIG_IGN);
		signal(SIGUSR2, SIG_DFL);
		close(pfd[0]);
		child_a();
	}
	if ((b = fork()) == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		signal(SIGUSR1, SIG_IGN);
		signal(SIGUSR2, SIG_DFL);
		setpgid(0, 0);
		for (;;)
			pause();
	}
	if ((z = fork()) == 0)
		_exit(7);
	if ((stopped = fork()) == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		signal(SIGUSR1, SIG_IGN);
		signal(SIGUSR2, SIG_DFL);
		for (;;)
			raise(SIGSTOP);
	}
	close(pfd[1]);
	setpgid(b, b);
	/* Let Z die and B settle before READY. */
	sleep_ms(50);
	out("READY a=%d b=%d z=%d stopped=%d counter=%p\n", a, b, z, stopped, (void *)&counter);
	for (;;) {
		counter++;
		drain();
		if (check_flag) {
			check_flag = 0;
			verify();
			report();
		}
		sleep_ms(5);
	}
}
