/*
 * memrefuse: memory that cr refuses to dump (for now), to check that the
 * refusal names it and leaves the process running.
 *
 *   memrefuse WORKDIR sysv     a 64 KiB SysV shared memory segment attached
 *                              (shmat), key 0x6372XXXX (XXXX: low bits of
 *                              the pid), already marked IPC_RMID so that it
 *                              goes away with the process
 *   memrefuse WORKDIR secret   16 KiB of memfd_secret memory mapped (the fd
 *                              closed); exits 3 with "NOSYS" if the kernel
 *                              has no memfd_secret
 *
 * READY kind=... addr=0x... [key=0x... shmid=N] counter=...
 * A check verifies the pattern in the memory.
 */
#include "fixture.h"
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>

#define LEN (64UL << 10)
#define SECRET_LEN (16UL << 10)

static unsigned char *mem;
static size_t len;

static void verify(void)
{
	long off = check_pattern(mem, len, 41);
	CHECK(off < 0, "pattern mismatch at +%ld", off);
}

int main(int argc, char **argv)
{
	fixture_init(argc, argv);
	if (argc < 3)
		die("usage: memrefuse WORKDIR sysv|secret");
	if (!strcmp(argv[2], "sysv")) {
		key_t key = (key_t)(0x63720000 | (getpid() & 0xffff));
		int id = shmget(key, LEN, IPC_CREAT | IPC_EXCL | 0600);
		if (id < 0)
			die("shmget key %#x", (unsigned)key);
		mem = shmat(id, NULL, 0);
		if (mem == (void *)-1) {
			shmctl(id, IPC_RMID, NULL);
			die("shmat");
		}
		if (shmctl(id, IPC_RMID, NULL))
			die("shmctl IPC_RMID");
		len = LEN;
		fill_pattern(mem, len, 41);
		out("READY kind=sysv addr=%p key=%#x shmid=%d counter=%p\n", (void *)mem, (unsigned)key, id, (void *)&counter);
	} else if (!strcmp(argv[2], "secret")) {
		int fd = syscall(SYS_memfd_secret, 0);
		if (fd < 0) {
			if (errno == ENOSYS) {
				out("NOSYS\n");
				exit(3);
			}
			die("memfd_secret");
		}
		if (ftruncate(fd, SECRET_LEN))
			die("ftruncate");
		mem = mmap(NULL, SECRET_LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (mem == MAP_FAILED)
			die("mmap secret");
		close(fd);
		len = SECRET_LEN;
		fill_pattern(mem, len, 41);
		out("READY kind=secret addr=%p counter=%p\n", (void *)mem, (void *)&counter);
	} else {
		die("unknown kind %s", argv[2]);
	}
	fixture_loop(verify, 5);
}
