/*
 * sysv: SysV IPC objects used by a parent P and its child C.
 *   segment A (key 0x6373XXXX, XXXX: low bits of the pid; 64 KiB + 100
 *     bytes, so the last page is partial): P fills it with a pattern and
 *     attaches it read-write; C detaches its inherited attachment and
 *     attaches A again read-only at another address. Owner set to uid 1234
 *     gid 2345, mode 0640 (IPC_SET).
 *   segment B (IPC_PRIVATE, 3 pages): attached read-write by P and C (C
 *     inherits it), marked for removal (IPC_RMID) while attached; C counts
 *     in it and answers P's requests through it.
 *   semaphore set S (key 0x6374XXXX, 3 semaphores), created with euid 4567
 *     and egid 3456 (cuid, cgid), mode 0660, values 5 0 42 set by P; then C
 *     does semop +1 on semaphore 1 with SEM_UNDO: values 5 1 42.
 *   message queue Q (key 0x6375XXXX), mode 0620: messages (type, text)
 *     (3,"three") (1,"one-a") (2,"two") (1,"one-b").
 * READY a=0x.. b=0x.. ca=0x.. shma=N shmb=N sem=N msg=N keya=0x.. keys=0x..
 *   keyq=0x.. c=PID counter=...
 * A check: A's pattern in P, and in C (asked through B) through its
 * read-only attachment; C's counter in B moves; IPC_STAT of A (2
 * attachments, owner, mode) and B (SHM_DEST, 2 attachments); S's values;
 * Q's messages, in order, read with MSG_COPY (not consumed).
 * With the argument "drain", a check also receives Q's messages (type 1
 * first, then the rest in order) and expects an empty queue afterwards.
 */
#include "fixture.h"
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/prctl.h>
#include <sys/sem.h>
#include <sys/shm.h>

#ifndef MSG_COPY
#define MSG_COPY 040000
#endif

#define ALEN ((64 << 10) + 100)
#define BLEN (3 * 4096)

static int shma, shmb, sem, msq;
static unsigned char *a;
static volatile uint64_t *b;
static pid_t c;
static uint64_t last;
static int drain_done;

struct m {
	long type;
	char text[64];
};
static const struct {
	long type;
	const char *text;
} msgs[] = { { 3, "three" }, { 1, "one-a" }, { 2, "two" }, { 1, "one-b" } };

union semun {
	int val;
	struct semid_ds *buf;
	unsigned short *array;
};

static void verify(void)
{
	uint64_t now = b[0];
	CHECK(now > last, "C's counter in segment B did not move (%llu)", (unsigned long long)now);
	last = now;
	CHECK(check_pattern(a, ALEN - 100, 51) < 0, "A's pattern in P");
	CHECK(a[ALEN - 1] == 0x5a, "A's last byte");
	uint64_t req = b[2] + 1;
	b[2] = req;
	for (int i = 0; i < 2000 && b[3] != req; i++)
		sleep_ms(1);
	CHECK(b[3] == req, "C did not answer");
	CHECK(b[4] == 0, "C sees a broken pattern through its read-only attachment of A");

	struct shmid_ds ds;
	CHECK(shmctl(shma, IPC_STAT, &ds) == 0, "IPC_STAT A: %s", strerror(errno));
	CHECK(ds.shm_nattch == 2, "A has %lu attachments", (unsigned long)ds.shm_nattch);
	CHECK(ds.shm_perm.uid == 1234 && ds.shm_perm.gid == 2345, "A's owner %u:%u", ds.shm_perm.uid, ds.shm_perm.gid);
	CHECK((ds.shm_perm.mode & 0777) == 0640, "A's mode %o", ds.shm_perm.mode);
	CHECK(ds.shm_segsz == ALEN, "A's size %zu", (size_t)ds.shm_segsz);
	CHECK(shmctl(shmb, IPC_STAT, &ds) == 0, "IPC_STAT B: %s", strerror(errno));
	CHECK(ds.shm_perm.mode & SHM_DEST, "B is no longer marked for removal");
	CHECK(ds.shm_nattch == 2, "B has %lu attachments", (unsigned long)ds.shm_nattch);

	unsigned short v[3] = { 0 };
	union semun arg = { .array = v };
	CHECK(semctl(sem, 0, GETALL, arg) == 0, "GETALL: %s", strerror(errno));
	CHECK(v[0] == 5 && v[1] == 1 && v[2] == 42, "semaphore values %u %u %u", v[0], v[1], v[2]);
	struct semid_ds sds;
	arg.buf = &sds;
	CHECK(semctl(sem, 0, IPC_STAT, arg) == 0, "sem IPC_STAT: %s", strerror(errno));
	CHECK(sds.sem_perm.cuid == 4567 && sds.sem_perm.cgid == 3456, "sem creator %u:%u", sds.sem_perm.cuid, sds.sem_perm.cgid);
	CHECK((sds.sem_perm.mode & 0777) == 0660, "sem mode %o", sds.sem_perm.mode);

	if (drain_done)
		return;
	for (size_t i = 0; i < sizeof(msgs) / sizeof(msgs[0]); i++) {
		struct m m;
		memset(&m, 0, sizeof(m));
		ssize_t n = msgrcv(msq, &m, sizeof(m.text), (long)i, IPC_NOWAIT | MSG_COPY);
		CHECK(n == (ssize_t)strlen(msgs[i].text) && m.type == msgs[i].type && !memcmp(m.text, msgs[i].text, n),
		      "message %zu: %zd bytes type %ld %.*s", i, n, m.type, (int)(n > 0 ? n : 0), m.text);
	}
	struct msqid_ds mds;
	CHECK(msgctl(msq, IPC_STAT, &mds) == 0 && mds.msg_qnum == 4, "queue holds %lu messages", (unsigned long)mds.msg_qnum);
	CHECK((mds.msg_perm.mode & 0777) == 0620, "queue mode %o", mds.msg_perm.mode);
}

static void verify_drain(void)
{
	verify();
	if (failed || drain_done)
		return;
	/* Type 1 first (one-a, one-b), then whatever is left in order (three, two). */
	static const char *want[] = { "one-a", "one-b", "three", "two" };
	static const long types[] = { 1, 1, 3, 2 };
	for (int i = 0; i < 4; i++) {
		struct m m;
		memset(&m, 0, sizeof(m));
		ssize_t n = msgrcv(msq, &m, sizeof(m.text), i < 2 ? 1 : 0, IPC_NOWAIT);
		CHECK(n == (ssize_t)strlen(want[i]) && m.type == types[i] && !memcmp(m.text, want[i], n),
		      "received %d: %zd bytes type %ld", i, n, m.type);
	}
	struct m m;
	CHECK(msgrcv(msq, &m, sizeof(m.text), 0, IPC_NOWAIT) < 0 && errno == ENOMSG, "queue not empty after draining");
	drain_done = 1;
}

int main(int argc, char **argv)
{
	fixture_init(argc, argv);
	int drain = argc > 2 && !strcmp(argv[2], "drain");
	key_t low = getpid() & 0xffff;
	key_t keya = 0x63730000 | low, keys = 0x63740000 | low, keyq = 0x63750000 | low;

	shma = shmget(keya, ALEN, IPC_CREAT | IPC_EXCL | 0600);
	if (shma < 0)
		die("shmget A");
	a = shmat(shma, NULL, 0);
	shmb = shmget(IPC_PRIVATE, BLEN, IPC_CREAT | 0600);
	if (a == (void *)-1 || shmb < 0)
		die("shmat A / shmget B");
	b = shmat(shmb, NULL, 0);
	if (b == (void *)-1)
		die("shmat B");
	fill_pattern(a, ALEN - 100, 51);
	a[ALEN - 1] = 0x5a;
	struct shmid_ds ds;
	if (shmctl(shma, IPC_STAT, &ds))
		die("IPC_STAT A");
	ds.shm_perm.uid = 1234;
	ds.shm_perm.gid = 2345;
	ds.shm_perm.mode = 0640;
	if (shmctl(shma, IPC_SET, &ds))
		die("IPC_SET A");

	if (setegid(3456) || seteuid(4567))
		die("seteuid");
	sem = semget(keys, 3, IPC_CREAT | IPC_EXCL | 0660);
	if (seteuid(0) || setegid(0) || sem < 0)
		die("semget");
	unsigned short v[3] = { 5, 0, 42 };
	union semun arg = { .array = v };
	if (semctl(sem, 0, SETALL, arg))
		die("SETALL");

	msq = msgget(keyq, IPC_CREAT | IPC_EXCL | 0620);
	if (msq < 0)
		die("msgget");
	for (size_t i = 0; i < sizeof(msgs) / sizeof(msgs[0]); i++) {
		struct m m = { .type = msgs[i].type };
		memcpy(m.text, msgs[i].text, strlen(msgs[i].text));
		if (msgsnd(msq, &m, strlen(msgs[i].text), IPC_NOWAIT))
			die("msgsnd");
	}

	int ready[2];
	if (pipe(ready))
		die("pipe");
	if ((c = fork()) == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		signal(SIGUSR1, SIG_IGN);
		signal(SIGUSR2, SIG_DFL);
		shmdt(a);
		volatile unsigned char *ra = shmat(shma, NULL, SHM_RDONLY);
		if (ra == (void *)-1)
			die("C: shmat A read-only");
		struct sembuf op = { .sem_num = 1, .sem_op = 1, .sem_flg = SEM_UNDO };
		if (semop(sem, &op, 1))
			die("C: semop");
		b[6] = (uint64_t)(uintptr_t)ra;
		write(ready[1], "x", 1);
		for (;;) {
			b[0]++;
			if (b[2] != b[3]) {
				b[4] = check_pattern((const void *)ra, ALEN - 100, 51) >= 0 || ra[ALEN - 1] != 0x5a;
				b[3] = b[2];
			}
			sleep_ms(2);
		}
	}
	char x;
	if (read(ready[0], &x, 1) != 1)
		die("C did not start");
	close(ready[0]);
	close(ready[1]);
	if (shmctl(shmb, IPC_RMID, NULL))
		die("IPC_RMID B");
	sleep_ms(10);
	out("READY a=%p b=%p ca=%#llx shma=%d shmb=%d sem=%d msg=%d keya=%#x keys=%#x keyq=%#x c=%d counter=%p\n",
	    (void *)a, (void *)b, (unsigned long long)b[6], shma, shmb, sem, msq, (unsigned)keya, (unsigned)keys, (unsigned)keyq,
	    c, (void *)&counter);
	fixture_loop(drain ? verify_drain : verify, 5);
}
