/*
 * refusals: a process holding several things cr refuses at once, for the
 * pre-flight test: a userfaultfd (fd 3), a pidfd of pid 1, a TCP socket
 * never bound nor connected (sock_diag does not list it), an flock lock, and
 * a deleted file of 2 MiB (above the ghost file limit) it keeps open.
 *
 * READY counter=0xADDR
 */
#include "fixture.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/socket.h>

static void verify(void) {}

int main(int argc, char **argv)
{
	fixture_init(argc, argv);
	if (syscall(SYS_userfaultfd, O_CLOEXEC | 1 /* UFFD_USER_MODE_ONLY */) < 0)
		die("userfaultfd");
	if (syscall(SYS_pidfd_open, 1, 0) < 0)
		die("pidfd_open 1");
	if (socket(AF_INET, SOCK_STREAM, 0) < 0)
		die("socket");
	int l = open(wpath("locked"), O_RDWR | O_CREAT, 0600);
	if (l < 0 || flock(l, LOCK_EX))
		die("flock");
	int d = open(wpath("gone"), O_RDWR | O_CREAT, 0600);
	if (d < 0 || ftruncate(d, 2 << 20) || unlink(wpath("gone")))
		die("deleted file");
	out("READY counter=%p\n", (void *)&counter);
	fixture_loop(verify, 5);
}
