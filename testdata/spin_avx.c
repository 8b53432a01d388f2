/*
 * spin_avx: register state.  Compile with -mavx512f -mavx2; needs AVX-512F+BW.
 *
 * spin_regs() (assembly below) loads known values into zmm0-zmm31, k1-k7,
 * rax rbx rcx rdx rbp r8-r15, MXCSR (round-down), the x87 control word
 * (round-up) and two x87 stack slots (an arbitrary constant and fldpi), then
 * spins incrementing `counter` in memory until the SIGUSR1 handler sets
 * `check_flag`.  It then stores every register to memory and returns; C code
 * compares against the expected values and re-enters the loop.
 * Also checks a __thread variable and the %fs base (arch_prctl ARCH_GET_FS).
 */
#include "fixture.h"
#include <asm/prctl.h>
#include <stddef.h>

struct regs {
	uint64_t z[32][8];        /* 0: zmm0..zmm31 */
	uint64_t k[8];            /* 2048: k0 (unused), k1..k7 */
	uint64_t g[13];           /* 2112: rax rbx rcx rdx rbp r8..r15 */
	uint64_t pad0[3];         /* 2216 */
	uint32_t mxcsr;           /* 2240 */
	uint16_t fcw;             /* 2244 */
	uint16_t pad1[5];         /* 2246 */
	unsigned char st[2][16];  /* 2256: st0, st1 (80-bit values) */
} __attribute__((aligned(64)));

_Static_assert(offsetof(struct regs, k) == 2048, "k");
_Static_assert(offsetof(struct regs, g) == 2112, "g");
_Static_assert(offsetof(struct regs, mxcsr) == 2240, "mxcsr");
_Static_assert(offsetof(struct regs, fcw) == 2244, "fcw");
_Static_assert(offsetof(struct regs, st) == 2256, "st");

static const char *gname[13] = { "rax", "rbx", "rcx", "rdx", "rbp", "r8", "r9",
				 "r10", "r11", "r12", "r13", "r14", "r15" };

void spin_regs(const struct regs *in, struct regs *out);

#define Z(i) "vmovdqu64 " #i "*64(%rdi), %zmm" #i "\n"
#define ZS(i) "vmovdqu64 %zmm" #i ", " #i "*64(%rsi)\n"
#define Z8(m, a, b, c, d, e, f, g, h) m(a) m(b) m(c) m(d) m(e) m(f) m(g) m(h)
#define ZALL(m) Z8(m, 0, 1, 2, 3, 4, 5, 6, 7) Z8(m, 8, 9, 10, 11, 12, 13, 14, 15) \
	Z8(m, 16, 17, 18, 19, 20, 21, 22, 23) Z8(m, 24, 25, 26, 27, 28, 29, 30, 31)
#define K(i) "kmovq 2048+8*" #i "(%rdi), %k" #i "\n"
#define KS(i) "kmovq %k" #i ", 2048+8*" #i "(%rsi)\n"
#define KALL(m) m(1) m(2) m(3) m(4) m(5) m(6) m(7)
#define GREGS(op) \
	op("rax", 0) op("rbx", 1) op("rcx", 2) op("rdx", 3) op("rbp", 4) \
	op("r8", 5) op("r9", 6) op("r10", 7) op("r11", 8) op("r12", 9)   \
	op("r13", 10) op("r14", 11) op("r15", 12)
#define GL(r, i) "mov 2112+8*" #i "(%rdi), %" r "\n"
#define GS(r, i) "mov %" r ", 2112+8*" #i "(%rsi)\n"

__asm__(".text\n"
	".globl spin_regs\n"
	".type spin_regs, @function\n"
	"spin_regs:\n"
	"push %rbx\n push %rbp\n push %r12\n push %r13\n push %r14\n push %r15\n"
	"fninit\n"
	"fldpi\n"               /* st1 after the next load */
	"fldt 2256(%rdi)\n"     /* st0 */
	"fldcw 2244(%rdi)\n"
	"ldmxcsr 2240(%rdi)\n"
	ZALL(Z) KALL(K) GREGS(GL)
	"1:\n"
	"incq counter(%rip)\n"
	"cmpl $0, check_flag(%rip)\n"
	"je 1b\n"
	ZALL(ZS) KALL(KS) GREGS(GS)
	"stmxcsr 2240(%rsi)\n"
	"fnstcw 2244(%rsi)\n"
	"fstpt 2256(%rsi)\n"
	"fstpt 2272(%rsi)\n"
	"movl $0x1f80, -4(%rsp)\n" /* back to the ABI defaults */
	"ldmxcsr -4(%rsp)\n"
	"fninit\n"
	"vzeroupper\n"
	"pop %r15\n pop %r14\n pop %r13\n pop %r12\n pop %rbp\n pop %rbx\n"
	"ret\n"
	".size spin_regs, .-spin_regs\n");

static struct regs want, got;

__thread uint64_t tls_data = 0x7157000000000001ULL; /* .tdata */
__thread uint64_t tls_bss;                           /* .tbss, set at start */
static unsigned long fsbase;

static void verify(void)
{
	unsigned long fs = 0, fs0;

	for (int i = 0; i < 32; i++)
		CHECK(memcmp(want.z[i], got.z[i], 64) == 0,
		      "zmm%d %016lx... want %016lx...", i,
		      (unsigned long)got.z[i][0], (unsigned long)want.z[i][0]);
	for (int i = 1; i < 8; i++)
		CHECK(want.k[i] == got.k[i], "k%d %#lx want %#lx", i,
		      (unsigned long)got.k[i], (unsigned long)want.k[i]);
	for (int i = 0; i < 13; i++)
		CHECK(want.g[i] == got.g[i], "%s %#lx want %#lx", gname[i],
		      (unsigned long)got.g[i], (unsigned long)want.g[i]);
	CHECK(want.mxcsr == got.mxcsr, "mxcsr %#x want %#x", got.mxcsr,
	      want.mxcsr);
	CHECK(want.fcw == got.fcw, "fcw %#x want %#x", got.fcw, want.fcw);
	CHECK(memcmp(want.st[0], got.st[0], 10) == 0, "x87 st0 differs");
	CHECK(memcmp(want.st[1], got.st[1], 10) == 0, "x87 st1 (pi) differs");

	CHECK(tls_data == 0x7157000000000001ULL, "tls_data %#lx",
	      (unsigned long)tls_data);
	CHECK(tls_bss == 0x7157000000000002ULL, "tls_bss %#lx",
	      (unsigned long)tls_bss);
	syscall(SYS_arch_prctl, ARCH_GET_FS, &fs);
	CHECK(fs == fsbase, "fs base %#lx want %#lx", fs, fsbase);
	__asm__ volatile("mov %%fs:0, %0" : "=r"(fs0));
	CHECK(fs0 == fsbase, "%%fs:0 self pointer %#lx want %#lx", fs0, fsbase);
	memset(&got, 0, sizeof(got));
}

int main(int argc, char **argv)
{
	long double third = 1.0L / 3.0L;

	fixture_init(argc, argv);
	if (!__builtin_cpu_supports("avx512f") ||
	    !__builtin_cpu_supports("avx512bw")) {
		out("NOAVX512 this CPU lacks AVX-512F/BW\n");
		exit(77);
	}

	for (int i = 0; i < 32; i++)
		for (int w = 0; w < 8; w++)
			want.z[i][w] = 0x0101010101010101ULL * (uint64_t)(i + 1) ^
				       (uint64_t)w * 0x9E3779B97F4A7C15ULL;
	for (int i = 1; i < 8; i++)
		want.k[i] = 0x1111111111111111ULL * (uint64_t)i ^ 0xA5A5000000005A5AULL;
	for (int i = 0; i < 13; i++)
		want.g[i] = 0xC0DE000000000000ULL | (uint64_t)i << 32 | (0x12345670U + i);
	want.mxcsr = 0x3f80; /* all exceptions masked, RC = round down */
	want.fcw = 0x0b7f;   /* all exceptions masked, 64-bit precision, RC = up */
	memcpy(want.st[0], &third, 10);
	__asm__ volatile("fninit\n fldpi\n fstpt %0" : "=m"(want.st[1]));

	tls_bss = 0x7157000000000002ULL;
	if (syscall(SYS_arch_prctl, ARCH_GET_FS, &fsbase))
		die("arch_prctl");

	out("READY regs=%p fsbase=%#lx tls_data=%p tls_bss=%p mxcsr=%#x fcw=%#x "
	    "r12=%#lx r13=%#lx r14=%#lx r15=%#lx k1=%#lx zmm0=%#lx counter=%p\n",
	    (void *)&want, fsbase, (void *)&tls_data, (void *)&tls_bss,
	    want.mxcsr, want.fcw, (unsigned long)want.g[9],
	    (unsigned long)want.g[10], (unsigned long)want.g[11],
	    (unsigned long)want.g[12], (unsigned long)want.k[1],
	    (unsigned long)want.z[0][0], (void *)&counter);
	for (;;) {
		spin_regs(&want, &got);
		check_flag = 0;
		failed = 0;
		verify();
		report();
	}
}
