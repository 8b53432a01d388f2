package parasite

// batchCode runs the table of syscalls at rbx (see BatchCode).
var batchCode = []byte{
	// loop:
	0x48, 0x8b, 0x03, //       0: mov    rax, [rbx]        ; nr
	0x48, 0x83, 0xf8, 0xff, // 3: cmp    rax, -1           ; end of the table?
	0x74, 0x24, //             7: je     done (+0x24 -> 45)
	0x48, 0x8b, 0x7b, 0x08, // 9: mov    rdi, [rbx+8]
	0x48, 0x8b, 0x73, 0x10, // 13: mov   rsi, [rbx+16]
	0x48, 0x8b, 0x53, 0x18, // 17: mov   rdx, [rbx+24]
	0x4c, 0x8b, 0x53, 0x20, // 21: mov   r10, [rbx+32]
	0x4c, 0x8b, 0x43, 0x28, // 25: mov   r8, [rbx+40]
	0x4c, 0x8b, 0x4b, 0x30, // 29: mov   r9, [rbx+48]
	0x0f, 0x05, //             33: syscall
	0x48, 0x89, 0x43, 0x38, // 35: mov   [rbx+56], rax     ; result
	0x48, 0x83, 0xc3, 0x40, // 39: add   rbx, 64           ; next entry
	0xeb, 0xd3, //             43: jmp   loop (-0x2d -> 0)
	// done:
	0xcc, //                   45: int3
}

// BatchCode returns position-independent x86-64 code that runs a table of
// syscalls: the code Injector.Batch expects at its code address (see
// PrepareBatchPage). On entry rbx points at a table of BatchEntrySize-byte
// entries {nr, a1, a2, a3, a4, a5, a6, result}, eight little-endian u64
// each. For every entry up to one whose nr is all ones, it loads nr into rax
// and the arguments into rdi, rsi, rdx, r10, r8, r9, runs `syscall`, stores
// rax in result and moves rbx to the next entry; then it runs int3. It
// touches no stack and clobbers rax, rbx, rcx, r11, rdi, rsi, rdx, r8-r10
// and the flags.
func BatchCode() []byte { return append([]byte(nil), batchCode...) }
