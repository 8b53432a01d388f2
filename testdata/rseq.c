/*
 * rseq: a fixture that spins inside an rseq(2) critical section.
 *
 * Run it with GLIBC_TUNABLES=glibc.pthread.rseq=0 so that glibc does not
 * register its own rseq area; the fixture registers `rs` (struct rseq, 32
 * bytes, 32-byte aligned, signature RSEQ_SIG) itself.  The main loop then
 * enters a critical section whose body is a long countdown loop, so the thread
 * spends nearly all its time with rip in [cs_start, cs_end).  The kernel
 * aborts the section on preemption, migration and signal delivery: the
 * abort handler (abort_ip, preceded by the 4-byte signature) increments
 * `aborts` and leaves the section; the C loop then counts the iteration,
 * runs a pending check and re-enters (storing &cs into rs.rseq_cs again).
 *
 * SIGUSR1 (whose delivery aborts the section): check that `aborts`
 * increased since the previous check, that the area is still registered
 * (rseq(2) with the same arguments fails with EBUSY), that the kernel keeps
 * cpu_id up to date, and that rs.rseq_cs is either clear or &cs.
 *
 * If the rseq area cannot be registered (glibc ignored the tunable, or no
 * kernel support) the fixture prints "READY skip=<why> counter=0x..." and
 * just follows the protocol.
 *
 * READY abort_ip=0x... cs_start=0x... cs_end=0x... rseq=0x... rseq_size=32
 *       sig=0x53053053 cs=0x... aborts=0x... counter=0x...
 */
#include "fixture.h"

#define RSEQ_SIG 0x53053053

struct rseq_area {
	uint32_t cpu_id_start;
	uint32_t cpu_id;
	uint64_t rseq_cs;
	uint32_t flags;
	uint32_t node_id;
	uint32_t mm_cid;
	uint32_t pad;
} __attribute__((aligned(32)));

struct rseq_cs_desc {
	uint32_t version;
	uint32_t flags;
	uint64_t start_ip;
	uint64_t post_commit_offset;
	uint64_t abort_ip;
} __attribute__((aligned(32)));

_Static_assert(sizeof(struct rseq_area) == 32, "struct rseq is 32 bytes");

struct rseq_area rs;
extern const unsigned int __rseq_size __attribute__((weak));
volatile unsigned long aborts;

/* Defined in the assembly below. */
extern struct rseq_cs_desc rseq_fixture_cs;
extern char rseq_fixture_start[], rseq_fixture_end[], rseq_fixture_abort[];

/*
 * Enter the critical section and spin there until the kernel aborts it.
 * The descriptor's start_ip/post_commit/abort_ip are link-time constants.
 */
__asm__(
	"	.pushsection .data.rseq_fixture_cs, \"aw\"\n"
	"	.balign 32\n"
	"	.globl rseq_fixture_cs\n"
	"rseq_fixture_cs:\n"
	"	.long 0, 0\n" /* version, flags */
	"	.quad rseq_fixture_start\n"
	"	.quad rseq_fixture_end - rseq_fixture_start\n"
	"	.quad rseq_fixture_abort\n"
	"	.popsection\n"
	"	.text\n"
	"	.globl rseq_fixture_spin\n"
	"	.type rseq_fixture_spin, @function\n"
	"rseq_fixture_spin:\n"
	"	movl $200000000, %ecx\n" /* bounded: an unprotected pass still ends */
	"	leaq rseq_fixture_cs(%rip), %rax\n"
	"	movq %rax, rs+8(%rip)\n" /* rs.rseq_cs = &cs */
	"	.globl rseq_fixture_start\n"
	"rseq_fixture_start:\n"
	"	decl %ecx\n"
	"	jnz rseq_fixture_start\n"
	"	.globl rseq_fixture_end\n"
	"rseq_fixture_end:\n" /* post-commit ip: the section ran to its end */
	"	ret\n"
	"	.long 0x53053053\n" /* RSEQ_SIG, right before abort_ip */
	"	.globl rseq_fixture_abort\n"
	"rseq_fixture_abort:\n"
	"	lock incq aborts(%rip)\n"
	"	ret\n"
	"	.size rseq_fixture_spin, . - rseq_fixture_spin\n");

void rseq_fixture_spin(void);

static unsigned long last_aborts;

static void verify(void)
{
	unsigned long a = aborts;
	uint64_t cs = __atomic_load_n(&rs.rseq_cs, __ATOMIC_RELAXED);
	long r;

	CHECK(a > last_aborts, "aborts did not increase (%lu, last check %lu)", a, last_aborts);
	last_aborts = a;
	errno = 0;
	r = syscall(SYS_rseq, &rs, sizeof(rs), 0, RSEQ_SIG);
	CHECK(r == -1 && errno == EBUSY, "rseq area not registered any more: rseq() = %ld, errno %d", r, errno);
	CHECK(rs.cpu_id != (uint32_t)-1 && rs.cpu_id < 4096, "rseq cpu_id %u", rs.cpu_id);
	CHECK(cs == 0 || cs == (uint64_t)(uintptr_t)&rseq_fixture_cs,
	      "rs.rseq_cs = %#llx, want 0 or %p", (unsigned long long)cs, (void *)&rseq_fixture_cs);
}

static void skip_verify(void)
{
}

int main(int argc, char **argv)
{
	fixture_init(argc, argv);
	memset(&rs, 0, sizeof(rs));
	rs.cpu_id = (uint32_t)-1; /* RSEQ_CPU_ID_UNINITIALIZED */
	if (syscall(SYS_rseq, &rs, sizeof(rs), 0, RSEQ_SIG)) {
		int e = errno;
		/* glibc >= 2.35 exports the size of the area it registered. */
		unsigned int glibc_size = &__rseq_size ? __rseq_size : 0;
		out("READY skip=rseq_registration_failed:errno_%d:glibc_rseq_size_%u%s counter=%p\n", e,
		    glibc_size, glibc_size ? ":glibc_ignored_GLIBC_TUNABLES=glibc.pthread.rseq=0" : "",
		    (void *)&counter);
		fixture_loop(skip_verify, 5);
	}
	out("READY abort_ip=%p cs_start=%p cs_end=%p rseq=%p rseq_size=%zu sig=%#x cs=%p aborts=%p counter=%p\n",
	    (void *)rseq_fixture_abort, (void *)rseq_fixture_start, (void *)rseq_fixture_end,
	    (void *)&rs, sizeof(rs), RSEQ_SIG, (void *)&rseq_fixture_cs, (void *)&aborts,
	    (void *)&counter);
	for (;;) {
		counter++;
		if (check_flag) {
			check_flag = 0;
			failed = 0;
			verify();
			report();
		}
		rseq_fixture_spin();
	}
}
