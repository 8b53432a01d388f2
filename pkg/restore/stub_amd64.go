package restore

import "encoding/binary"

// The restorer stub: a static ELF64 executable with one RWX PT_LOAD segment
// of two pages at stubBase. Its code is
//
//	loop: mov $34, %eax   // pause
//	      syscall
//	      jmp loop
//
// It never runs on its own: cr traces it from its exec and only borrows its
// `syscall` instruction and its second page as scratch memory.
const (
	stubBase    = 0x10000000
	stubCodeOff = 0x78 // right after the ELF header and one program header
	stubSyscall = stubBase + stubCodeOff + 5
	stubScratch = stubBase + 0x1000
	stubMemSize = 0x2000
)

var stubCode = []byte{0xb8, 0x22, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xeb, 0xf7}

// stubELF returns the bytes of the stub executable (System V ABI, ELF-64
// object file format, "ELF header" and "Program header").
func stubELF() []byte {
	b := make([]byte, stubCodeOff+len(stubCode))
	le := binary.LittleEndian
	copy(b, []byte{0x7f, 'E', 'L', 'F', 2 /* 64-bit */, 1 /* LE */, 1 /* version */, 0 /* SysV */})
	le.PutUint16(b[16:], 2)                    // e_type ET_EXEC
	le.PutUint16(b[18:], 62)                   // e_machine EM_X86_64
	le.PutUint32(b[20:], 1)                    // e_version
	le.PutUint64(b[24:], stubBase+stubCodeOff) // e_entry
	le.PutUint64(b[32:], 64)                   // e_phoff
	le.PutUint16(b[52:], 64)                   // e_ehsize
	le.PutUint16(b[54:], 56)                   // e_phentsize
	le.PutUint16(b[56:], 1)                    // e_phnum
	ph := b[64:]
	le.PutUint32(ph[0:], 1)               // PT_LOAD
	le.PutUint32(ph[4:], 7)               // PF_R|PF_W|PF_X
	le.PutUint64(ph[8:], 0)               // p_offset
	le.PutUint64(ph[16:], stubBase)       // p_vaddr
	le.PutUint64(ph[24:], stubBase)       // p_paddr
	le.PutUint64(ph[32:], uint64(len(b))) // p_filesz
	le.PutUint64(ph[40:], stubMemSize)    // p_memsz
	le.PutUint64(ph[48:], 0x1000)         // p_align
	copy(b[stubCodeOff:], stubCode)
	return b
}
