package parasite

import (
	"encoding/binary"
	"github.com/cr-tools/cr/internal/cpu"

	"github.com/cr-tools/cr/pkg/ptrace"
	"golang.org/x/sys/unix"
)

// An rt_sigframe as x86-64 Linux lays it out (arch/x86/include/asm/sigframe.h,
// arch/x86/include/uapi/asm/sigcontext.h, arch/x86/kernel/signal_64.c):
//
//	0    pretcode (the return address a handler's ret would use)
//	8    struct ucontext: uc_flags, uc_link, uc_stack (24 bytes),
//	48   uc_mcontext (struct sigcontext, 256 bytes),
//	304  uc_sigmask (8 bytes)
//	312  siginfo (128 bytes)
//	...  the XSAVE area (64-byte aligned) with FP_XSTATE_MAGIC1 in its
//	     software-reserved bytes and FP_XSTATE_MAGIC2 right after it
//
// rt_sigreturn reads the frame at rsp-8, so a task that runs `mov $15, %eax;
// syscall` with rsp = frame+8 gets back every register, the FPU/AVX state and
// the signal mask from it.
const (
	frameHdr     = 440
	ucOff        = 8
	mcOff        = ucOff + 40
	sigmaskOff   = ucOff + 296
	ucFlagsAll   = 0x7 // UC_FP_XSTATE | UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS
	fpMagic1     = 0x46505853
	fpMagic2     = 0x46505845
	fpSwOff      = 464 // struct _fpx_sw_bytes in the FXSAVE area
	redZone      = 128
	frameAlign   = 64
	ssFlagsNoop  = 3 // an invalid ss_flags: rt_sigreturn's restore_altstack fails and changes nothing
	restartSys   = 512
	restartNoInt = 513
	restartNoHnd = 514
	restartBlock = 516
)

const xfeatTileData = 18 // XFEATURE_XTILE_DATA (AMX tiles, 8 KiB)

// sigXState trims a ptrace XSAVE area to what a signal frame of the task
// holds: without the AMX tile data unless the task uses it (a task that never
// asked for AMX has a signal frame that ends before the tiles, and
// rt_sigreturn refuses a larger xstate_size, restoring only x87/SSE).
func sigXState(x []byte) []byte {
	if len(x) < 576 {
		return x
	}
	le := binary.LittleEndian
	xcr0, bv := le.Uint64(x[fpSwOff:]), le.Uint64(x[512:])
	if xcr0&(1<<xfeatTileData) != 0 && bv&(1<<xfeatTileData) == 0 {
		if _, off, _, _ := cpu.CPUID(0xd, xfeatTileData); off >= 576 && int(off) < len(x) {
			y := append([]byte(nil), x[:off]...)
			le.PutUint64(y[fpSwOff:], xcr0&^(1<<xfeatTileData))
			return y
		}
	}
	return x
}

// frameSize is the room a frame with an XSAVE area of xlen bytes needs,
// including the worst-case alignment padding before the XSAVE area.
func frameSize(xlen int) int { return frameHdr + frameAlign + xlen + 4 }

// frameRegs returns the registers rt_sigreturn must load so that the task
// goes on as if it had never been stopped: a syscall it was interrupted in is
// restarted (or returns EINTR for -ERESTART_RESTARTBLOCK: rt_sigreturn
// discards the restart block), as the kernel would do on its way out of the
// stop, because rt_sigreturn sets orig_rax to -1 and so disables that fix-up.
func frameRegs(r *ptrace.Regs) ptrace.Regs {
	n := *r
	if int64(n.Orig_rax) >= 0 {
		switch -int64(n.Rax) {
		case restartSys, restartNoInt, restartNoHnd:
			n.Rax = n.Orig_rax
			n.Rip -= 2
		case restartBlock:
			n.Rax = ^uint64(unix.EINTR) + 1
		}
	}
	return n
}

// buildFrame returns the bytes of a frame at addr holding r, the XSAVE area
// xsave (PTRACE_GETREGSET NT_X86_XSTATE format) and the signal mask mask,
// with pretcode in the first slot.
func buildFrame(addr uint64, pretcode uint64, r *ptrace.Regs, xsave []byte, mask uint64) []byte {
	le := binary.LittleEndian
	fp := (addr + frameHdr + frameAlign - 1) &^ (frameAlign - 1)
	fpOff := int(fp - addr)
	b := make([]byte, fpOff+len(xsave)+4)
	le.PutUint64(b[0:], pretcode)
	le.PutUint64(b[ucOff:], ucFlagsAll)
	le.PutUint32(b[ucOff+16+8:], ssFlagsNoop)
	n := frameRegs(r)
	mc := b[mcOff:]
	for i, v := range []uint64{n.R8, n.R9, n.R10, n.R11, n.R12, n.R13, n.R14, n.R15,
		n.Rdi, n.Rsi, n.Rbp, n.Rbx, n.Rdx, n.Rax, n.Rcx, n.Rsp, n.Rip, n.Eflags} {
		le.PutUint64(mc[8*i:], v)
	}
	le.PutUint16(mc[144:], uint16(n.Cs))
	le.PutUint16(mc[150:], uint16(n.Ss))
	le.PutUint64(mc[184:], fp) // fpstate
	le.PutUint64(b[sigmaskOff:], mask)
	x := b[fpOff:]
	copy(x, xsave)
	// ptrace stores XCR0 where the signal frame has its software bytes.
	xfeatures := le.Uint64(xsave[fpSwOff:])
	le.PutUint32(x[fpSwOff:], fpMagic1)
	le.PutUint32(x[fpSwOff+4:], uint32(len(xsave)+4)) // extended_size
	le.PutUint64(x[fpSwOff+8:], xfeatures)
	le.PutUint32(x[fpSwOff+16:], uint32(len(xsave))) // xstate_size
	le.PutUint32(x[len(xsave):], fpMagic2)
	return b
}

// sigreturnGadget is `mov $15, %rax; syscall` (rt_sigreturn), as in glibc's
// and musl's __restore_rt and in Go's runtime.
var sigreturnGadget = []byte{0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05}

// returnsAfterSyscall reports whether the code after a `syscall` at code[i]
// only clears registers with 32-bit xors and then returns (`ret`): in this
// kernel's vdso, `syscall; xor %edx,%edx; ...; xor %r11d,%r11d; ret`. Such a
// syscall returns to whatever address sits at rsp.
func returnsAfterSyscall(code []byte, i int) bool {
	j := i + 2
	for k := 0; k < 16 && j < len(code); k++ {
		switch {
		case code[j] == 0xc3:
			return true
		case code[j] == 0x31 && j+1 < len(code) && selfXor(code[j+1]) && code[j+1]&7 != 4: // not %esp
			j += 2
		case (code[j] == 0x45 || code[j] == 0x41 || code[j] == 0x44) && j+2 < len(code) && code[j+1] == 0x31 && selfXor(code[j+2]):
			j += 3
		default:
			return false
		}
	}
	return false
}

// selfXor reports whether modrm encodes `xor reg, same reg`.
func selfXor(modrm byte) bool { return modrm >= 0xc0 && (modrm>>3)&7 == modrm&7 }
