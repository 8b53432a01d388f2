/*
 * ptypair: a pseudo-terminal pair inside the tree, with a session and job
 * control on its slave, as tmux or script makes one.
 *
 *   ptypair WORKDIR job     the parent (a session leader, as the harness
 *                           starts it) holds the master at fd_master, with
 *                           packet mode and exclusive mode on, and sets the
 *                           slave's termios to non-default values (no ECHO,
 *                           no ICRNL, VINTR ^A, VERASE ^H, VMIN 3, 9600
 *                           baud out) and the window size 33x111 (5x7 px).
 *                           The child calls setsid, opens the slave by name
 *                           at fd 5 (it becomes its controlling terminal)
 *                           and /dev/tty at fd 6, then starts two jobs: fg,
 *                           in its own process group, made the foreground
 *                           group (tcsetpgrp), which sleeps; and bg, in
 *                           another group, which reads the terminal and so
 *                           is stopped by SIGTTIN (a stopped background
 *                           job). On SIGCONT bg reads again and stops again.
 *   ptypair WORKDIR data    the same pair without jobs (the child stays in
 *                           the foreground); the parent writes "typed\n"
 *                           into the master, which the child does not read,
 *                           and the child writes "output\n" into the slave,
 *                           which the parent does not read: data queued in
 *                           each direction. The first verification reads
 *                           both back (the parent from the master, the
 *                           child from the slave) and checks them. The
 *                           master is opened through /dev/pts/ptmx.
 *   ptypair WORKDIR lone    a pair with no slave opened (for a slave held
 *                           outside the tree); READY names it (pts=N).
 *   ptypair WORKDIR slave PATH   opens the slave PATH (of a master outside
 *                           the tree) at fd 5, with O_NOCTTY.
 *   ptypair WORKDIR ctty PATH    as slave, without O_NOCTTY: PATH becomes
 *                           its controlling terminal (it is a session leader).
 *
 * Verification (SIGUSR1 to the parent): through the master, the termios,
 * window size, packet, exclusive and lock modes, the pty number, the
 * terminal's session (TIOCGSID: the child) and foreground group
 * (TIOCGPGRP: fg's group); then the child verifies from inside (asked by
 * SIGUSR1, answering over a pipe): its termios and window size on fd 5,
 * ttyname(5), that it leads its session, that /dev/tty (fd 6, and opened
 * anew) is its terminal, and tcgetpgrp.
 *
 * READY fd_master=N pts=N child=PID fg=PID bg=PID counter=0xADDR
 */
#include "fixture.h"
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>

static int master = -1, ptsno = -1, mode_data;
static pid_t child, fg, bg;
static int rep[2]; /* child -> parent reports */
static struct termios want_tio;
static const struct winsize want_ws = {33, 111, 5, 7};
static char slave_name[64];
static int data_checked;

static void set_termios(struct termios *t)
{
	t->c_lflag &= ~(ECHO | ECHOE);
	t->c_iflag &= ~ICRNL;
	t->c_iflag |= IXANY;
	t->c_cc[VINTR] = 1;
	t->c_cc[VERASE] = 8;
	t->c_cc[VMIN] = 3;
	cfsetospeed(t, B9600);
}

static int same_tio(const struct termios *a, const struct termios *b)
{
	return a->c_iflag == b->c_iflag && a->c_oflag == b->c_oflag && a->c_cflag == b->c_cflag &&
	       a->c_lflag == b->c_lflag && memcmp(a->c_cc, b->c_cc, NCCS) == 0 &&
	       cfgetospeed(a) == cfgetospeed(b) && cfgetispeed(a) == cfgetispeed(b);
}

static int read_exact(int fd, char *buf, int n, int skip_pkt)
{
	int got = 0;
	while (got < n) {
		struct pollfd p = {fd, POLLIN, 0};
		if (poll(&p, 1, 2000) <= 0)
			return got;
		char tmp[256];
		ssize_t r = read(fd, tmp, sizeof tmp);
		if (r <= 0)
			return got;
		int off = skip_pkt ? 1 : 0; /* TIOCPKT_DATA byte */
		if (r - off > n - got)
			r = n - got + off;
		memcpy(buf + got, tmp + off, (size_t)(r - off));
		got += (int)(r - off);
	}
	return got;
}

static void noop(void) {}

/* ---- the child: session leader on the slave ---- */

static volatile sig_atomic_t child_flag;
static void on_child_usr1(int s) { (void)s; child_flag = 1; }

static void child_verify(char *msg, size_t len)
{
	msg[0] = 0;
	struct termios t;
	struct winsize ws;
	if (tcgetattr(5, &t) || !same_tio(&t, &want_tio)) {
		snprintf(msg, len, "child: termios differ on fd 5 (lflag %#x iflag %#x intr %d)", t.c_lflag, t.c_iflag, t.c_cc[VINTR]);
		return;
	}
	if (ioctl(5, TIOCGWINSZ, &ws) || ws.ws_row != want_ws.ws_row || ws.ws_col != want_ws.ws_col ||
	    ws.ws_xpixel != want_ws.ws_xpixel || ws.ws_ypixel != want_ws.ws_ypixel) {
		snprintf(msg, len, "child: window size %dx%d", ws.ws_row, ws.ws_col);
		return;
	}
	char *n = ttyname(5);
	if (!n || strcmp(n, slave_name)) {
		snprintf(msg, len, "child: ttyname(5) is %s, want %s", n ? n : "(none)", slave_name);
		return;
	}
	if (getsid(0) != getpid()) {
		snprintf(msg, len, "child: session %d, not its own", getsid(0));
		return;
	}
	struct stat st;
	char link[64] = {0};
	if (readlink("/proc/self/fd/6", link, sizeof link - 1) < 0 || strcmp(link, "/dev/tty")) {
		snprintf(msg, len, "child: fd 6 is %s, not /dev/tty", link);
		return;
	}
	int tty = open("/dev/tty", O_RDWR | O_NOCTTY);
	if (tty < 0) {
		snprintf(msg, len, "child: open /dev/tty: %s (no controlling terminal)", strerror(errno));
		return;
	}
	int ok = fstat(tty, &st) == 0;
	struct stat s5;
	ok = ok && fstat(5, &s5) == 0;
	int tsid = -1;
	ioctl(tty, TIOCGSID, &tsid);
	close(tty);
	if (!ok || tsid != getpid()) {
		snprintf(msg, len, "child: /dev/tty's session is %d", tsid);
		return;
	}
	pid_t want = mode_data ? getpgrp() : fg;
	pid_t pg = tcgetpgrp(5);
	if (pg != want) {
		snprintf(msg, len, "child: foreground group %d, want %d", pg, want);
		return;
	}
	if (mode_data && !data_checked) {
		char buf[16] = {0};
		int q = 0;
		ioctl(5, FIONREAD, &q);
		int got = read_exact(5, buf, 6, 0);
		if (got != 6 || memcmp(buf, "typed\n", 6)) {
			snprintf(msg, len, "child: read %d bytes %.6s of the typed line (FIONREAD said %d)", got, buf, q);
			return;
		}
		data_checked = 1;
	}
}

static void run_child(void)
{
	signal(SIGUSR1, on_child_usr1);
	signal(SIGUSR2, SIG_DFL);
	close(rep[0]);
	close(master);
	if (setsid() < 0)
		die("setsid");
	int s = open(slave_name, O_RDWR); /* no O_NOCTTY: it becomes the controlling terminal */
	if (s < 0 || dup2(s, 5) < 0)
		die("open %s", slave_name);
	if (s != 5)
		close(s);
	int t = open("/dev/tty", O_RDWR);
	if (t < 0 || dup2(t, 6) < 0)
		die("open /dev/tty");
	if (t != 6)
		close(t);
	if (mode_data) {
		if (write(5, "output\n", 7) != 7)
			die("write slave");
	} else {
		signal(SIGTTOU, SIG_IGN);
		fg = fork();
		if (fg == 0) {
			setpgid(0, 0);
			for (;;)
				pause();
		}
		setpgid(fg, fg);
		if (tcsetpgrp(5, fg))
			die("tcsetpgrp");
		signal(SIGTTOU, SIG_DFL);
		bg = fork();
		if (bg == 0) {
			setpgid(0, 0);
			char c;
			for (;;)
				read(5, &c, 1); /* SIGTTIN stops it; again after each SIGCONT */
		}
		setpgid(bg, bg);
	}
	char line[64];
	int n = snprintf(line, sizeof line, "%d %d\n", fg, bg);
	if (write(rep[1], line, (size_t)n) != n)
		die("report");
	for (;;) {
		if (child_flag) {
			child_flag = 0;
			char msg[256];
			child_verify(msg, sizeof msg);
			char out[300];
			int k = snprintf(out, sizeof out, "%s\n", msg[0] ? msg : "ok");
			write(rep[1], out, (size_t)k);
		}
		sleep_ms(20);
	}
}

/* ---- the parent: holds the master ---- */

static void verify(void)
{
	struct termios t;
	struct winsize ws;
	CHECK(tcgetattr(master, &t) == 0 && same_tio(&t, &want_tio), "termios through the master differ (lflag %#x)", t.c_lflag);
	CHECK(ioctl(master, TIOCGWINSZ, &ws) == 0 && ws.ws_row == 33 && ws.ws_col == 111 && ws.ws_xpixel == 5 && ws.ws_ypixel == 7,
	      "window size %dx%d", ws.ws_row, ws.ws_col);
	int v = -1;
	CHECK(ioctl(master, TIOCGPTN, &v) == 0 && v == ptsno, "pty number %d, want %d", v, ptsno);
	CHECK(ioctl(master, TIOCGPKT, &v) == 0 && v == 1, "packet mode %d", v);
	CHECK(ioctl(master, TIOCGEXCL, &v) == 0 && v == 1, "master exclusive mode %d", v);
	CHECK(ioctl(master, TIOCGPTLCK, &v) == 0 && v == 0, "locked %d", v);
	if (child) {
		pid_t sid = -1, pg = -1;
		CHECK(ioctl(master, TIOCGSID, &sid) == 0 && sid == child, "the terminal's session is %d, want %d", sid, child);
		CHECK(ioctl(master, TIOCGPGRP, &pg) == 0 && pg == (mode_data ? child : fg), "foreground group %d", pg);
	}
	if (mode_data && !data_checked) {
		char buf[16] = {0};
		int got = read_exact(master, buf, 8, 1);
		CHECK(got == 8 && memcmp(buf, "output\r\n", 8) == 0, "read %d bytes of the child's output from the master", got);
		data_checked = 1;
	}
	if (child && !failed) {
		kill(child, SIGUSR1);
		char line[300] = {0};
		struct pollfd p = {rep[0], POLLIN, 0};
		int n = 0;
		if (poll(&p, 1, 5000) > 0)
			n = (int)read(rep[0], line, sizeof line - 1);
		if (n > 0 && line[n - 1] == '\n')
			line[n - 1] = 0;
		CHECK(n > 0 && strcmp(line, "ok") == 0, "%s", n > 0 ? line : "the child did not answer");
	}
}

int main(int argc, char **argv)
{
	fixture_init(argc, argv);
	const char *mode = argc > 2 ? argv[2] : "job";
	if (!strcmp(mode, "ctty")) {
		if (argc < 4)
			die("ctty PATH");
		int s = open(argv[3], O_RDWR); /* no O_NOCTTY: it becomes the controlling terminal */
		if (s < 0 || dup2(s, 5) < 0)
			die("open %s", argv[3]);
		out("READY counter=%p\n", (void *)&counter);
		fixture_loop(noop, 10);
	}
	if (!strcmp(mode, "slave")) {
		if (argc < 4)
			die("slave PATH");
		int s = open(argv[3], O_RDWR | O_NOCTTY);
		if (s < 0 || dup2(s, 5) < 0)
			die("open %s", argv[3]);
		out("READY counter=%p\n", (void *)&counter);
		fixture_loop(noop, 10);
	}
	mode_data = !strcmp(mode, "data");
	/* data mode opens the ptmx of the devpts mount itself */
	master = mode_data ? open("/dev/pts/ptmx", O_RDWR | O_NOCTTY) : posix_openpt(O_RDWR | O_NOCTTY);
	if (master < 0 || unlockpt(master))
		die("posix_openpt");
	if (ioctl(master, TIOCGPTN, &ptsno))
		die("TIOCGPTN");
	snprintf(slave_name, sizeof slave_name, "/dev/pts/%d", ptsno);
	if (!strcmp(mode, "lone")) {
		out("READY fd_master=%d pts=%d counter=%p\n", master, ptsno, (void *)&counter);
		fixture_loop(noop, 10);
	}
	struct termios t;
	if (tcgetattr(master, &t))
		die("tcgetattr");
	set_termios(&t);
	if (tcsetattr(master, TCSANOW, &t))
		die("tcsetattr");
	tcgetattr(master, &want_tio);
	if (ioctl(master, TIOCSWINSZ, &want_ws))
		die("TIOCSWINSZ");
	int one = 1;
	if (ioctl(master, TIOCPKT, &one) || ioctl(master, TIOCEXCL))
		die("TIOCPKT/TIOCEXCL");
	if (pipe(rep))
		die("pipe");
	for (int i = 0; i < 2; i++) { /* clear of fds 5 and 6 */
		int hi = fcntl(rep[i], F_DUPFD, 10);
		if (hi < 0)
			die("F_DUPFD");
		close(rep[i]);
		rep[i] = hi;
	}
	child = fork();
	if (child < 0)
		die("fork");
	if (child == 0)
		run_child();
	close(rep[1]);
	char line[64] = {0};
	struct pollfd p = {rep[0], POLLIN, 0};
	if (poll(&p, 1, 5000) <= 0 || read(rep[0], line, sizeof line - 1) <= 0)
		die("child did not start");
	sscanf(line, "%d %d", &fg, &bg);
	if (mode_data && write(master, "typed\n", 6) != 6)
		die("write master");
	if (!mode_data) { /* wait until bg is stopped by SIGTTIN */
		for (int i = 0; i < 500; i++) {
			char path[64], buf[512];
			snprintf(path, sizeof path, "/proc/%d/stat", bg);
			int f = open(path, O_RDONLY);
			ssize_t n = f >= 0 ? read(f, buf, sizeof buf - 1) : -1;
			if (f >= 0)
				close(f);
			if (n > 0) {
				buf[n] = 0;
				char *c = strrchr(buf, ')');
				if (c && c[2] == 'T')
					break;
			}
			sleep_ms(10);
		}
	}
	usleep(50000); /* let the queued bytes reach the line disciplines */
	out("READY fd_master=%d pts=%d child=%d fg=%d bg=%d counter=%p\n", master, ptsno, child, fg, bg, (void *)&counter);
	fixture_loop(verify, 10);
}
