/*
 * refusals: a process holding several things cr refuses at once, for the
 * pre-flight test: an inotify instance (fd), a signalfd, a TCP socket
 * never bound nor connected (sock_diag does not list it), an flock lock, and a deleted file it keeps open.
 *
 * READY counter=0xADDR
 */
#include "fixture.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/socket.h>

static void verify(void) {}

int main(int argc, char **argv)
{
	fixture_init(argc, argv);
	if (inotify_init1(IN_CLOEXEC) < 0)
		die("inotify_init1");
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGWINCH);
	if (signalfd(-1, &set, SFD_CLOEXEC) < 0)
		die("signalfd");
	if (socket(AF_INET, SOCK_STREAM, 0) < 0)
		die("socket");
	int l = open(wpath("locked"), O_RDWR | O_CREAT, 0600);
	if (l < 0 || flock(l, LOCK_EX))
		die("flock");
	int d = open(wpath("gone"), O_RDWR | O_CREAT, 0600);
	if (d < 0 || unlink(wpath("gone")))
		die("deleted file");
	out("READY counter=%p\n", (void *)&counter);
	fixture_loop(verify, 5);
}
