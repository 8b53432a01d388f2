/*
 * socket: holds a TCP socket never bound nor connected (fd 3), which cr
 * does not save yet (sock_diag does not list it): the dumper must refuse
 * it and leave the process running.
 */
#include "fixture.h"
#include <arpa/inet.h>
#include <sys/socket.h>

static int s;

static void verify(void)
{
	int type = 0;
	socklen_t len = sizeof(type);
	CHECK(getsockopt(s, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_STREAM, "socket");
}

int main(int argc, char **argv)
{
	fixture_init(argc, argv);
	s = socket(AF_INET, SOCK_STREAM, 0);
	if (s < 0)
		die("socket");
	out("READY socket=%d counter=%p\n", s, (void *)&counter);
	fixture_loop(verify, 5);
}
