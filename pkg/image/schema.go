package image

// Format version. A reader refuses a different major version; a newer
// minor version only adds optional fields.
const (
	FormatMajor = 1
	FormatMinor = 3
)

// PageSize is the size of a page in pages files.
const PageSize = 4096

// Kind identifies the kind of object a file holds.
type Kind uint16

const (
	KindInventory Kind = 1
	KindCore      Kind = 2 // one process: identity, signals, threads
	KindMM        Kind = 3 // one process: mm layout, VMAs
	KindPageMap   Kind = 4 // one process: which pages are saved where
	KindPages     Kind = 5 // one process: raw pages
	KindFiles     Kind = 6 // open file descriptions (shared by id)
	KindFds       Kind = 7 // one process: fd table, cwd and root
	KindIPC       Kind = 8 // SysV IPC objects (format 1.2)
)

var kindNames = map[Kind]string{
	KindInventory: "inventory", KindCore: "core", KindMM: "mm", KindPageMap: "pagemap",
	KindPages: "pages", KindFiles: "files", KindFds: "fds", KindIPC: "ipc",
}

func (k Kind) String() string {
	if n, ok := kindNames[k]; ok {
		return n
	}
	return "unknown"
}

// Record tags. Tags are never reused.
type Tag uint32

const (
	TagEnd       Tag = 0
	TagInventory Tag = 1
	TagTask      Tag = 2
	TagThread    Tag = 3
	TagMM        Tag = 4
	TagVMA       Tag = 5
	TagPageRun   Tag = 6
	TagFile      Tag = 7
	TagFd        Tag = 8
	TagFS        Tag = 9
	TagShmem     Tag = 10
	TagSysVShm   Tag = 11 // format 1.2
	TagSysVSem   Tag = 12 // format 1.2
	TagSysVMsg   Tag = 13 // format 1.2
)

// Inventory is the first thing a reader looks at: who wrote the image, on
// what kernel and CPU, and which processes it holds.
type Inventory struct {
	FormatMajor int     `json:"format_major"`
	FormatMinor int     `json:"format_minor"`
	CRVersion   string  `json:"cr_version"`
	DumpTime    string  `json:"dump_time"` // RFC 3339, UTC
	Options     Options `json:"options"`
	Kernel      Kernel  `json:"kernel"`
	CPU         CPU     `json:"cpu"`
	RootPid     int     `json:"root_pid"`
	Pids        []int   `json:"pids"`
	// NetLock names the nf_tables table (family inet) that drops the
	// image's TCP connections from the dump until restore has repaired
	// them (pkg/netlock); empty if the dump took no lock (format 1.2).
	NetLock string `json:"net_lock,omitempty"`
}

// Options are the dump options that matter to restore.
type Options struct {
	LeaveRunning bool `json:"leave_running,omitempty"`
	ShellJob     bool `json:"shell_job,omitempty"`
	// FileLocks: the dump saved file locks (--file-locks, format 1.3);
	// restore takes them again only with the same option.
	FileLocks bool `json:"file_locks,omitempty"`
}

// Kernel is uname(2) of the dumping machine.
type Kernel struct {
	Sysname string `json:"sysname"`
	Release string `json:"release"`
	Version string `json:"version"`
	Machine string `json:"machine"`
}

// CPU describes the dumping machine's register state format and the
// feature flags its code may rely on.
type CPU struct {
	Arch      string `json:"arch"`       // "x86_64"
	XFeatures uint64 `json:"xfeatures"`  // XCR0 as reported by the kernel in the XSAVE area
	XSaveSize int    `json:"xsave_size"` // bytes of the dumping machine's XSAVE area
	// Vendor is CPUID leaf 0's vendor string (format 1.1).
	Vendor string `json:"vendor,omitempty"`
	// XSaveLayout is where the dumping machine kept each extended XSAVE
	// component, for information (format 1.1).
	XSaveLayout []XComponent `json:"xsave_layout,omitempty"`
	// CPUID holds the dumping CPU's feature leaves (format 1.1): restore
	// refuses a CPU that lacks a flag of the compared subset
	// (internal/cpu.FeatureLeaves, docs/DESIGN.md).
	CPUID []CPUIDLeaf `json:"cpuid,omitempty"`
}

// XComponent is one extended XSAVE state component of a machine's
// standard-format area: CPUID.(EAX=0DH,ECX=bit) EBX (offset) and EAX
// (size), in bytes.
type XComponent struct {
	Bit    uint `json:"bit"`
	Offset int  `json:"offset"`
	Size   int  `json:"size"`
}

// CPUIDLeaf is the result of CPUID for one leaf and sub-leaf.
type CPUIDLeaf struct {
	Leaf    uint32 `json:"leaf"`
	Subleaf uint32 `json:"subleaf"`
	EAX     uint32 `json:"eax"`
	EBX     uint32 `json:"ebx"`
	ECX     uint32 `json:"ecx"`
	EDX     uint32 `json:"edx"`
}

// XState is a thread's XSAVE state per component, independent of the
// machine's layout (format 1.1; internal/cpu.XState). Legacy is the
// 512-byte FXSAVE region (x87, MXCSR, xmm0-15; bytes 464-511 are the
// dumping kernel's software bytes and mean nothing to restore). XStateBV
// is the header's XSTATE_BV: bit i set means component i is not in its
// initial state. Components holds the bytes of every extended component
// (bit 2 and up) whose XSTATE_BV bit is set, in ascending bit order; the
// others are in their initial state.
type XState struct {
	XStateBV   uint64            `json:"xstate_bv"`
	Legacy     []byte            `json:"legacy"`
	Components []XStateComponent `json:"components,omitempty"`
}

// XStateComponent is the bytes of one extended XSAVE component, as the
// standard format holds them (CPUID.(EAX=0DH,ECX=Bit).EAX bytes).
type XStateComponent struct {
	Bit  uint   `json:"bit"`
	Data []byte `json:"data"`
}

// Task is the process-wide state of one process (core-PID.img, TagTask).
type Task struct {
	Pid        int         `json:"pid"`
	Ppid       int         `json:"ppid"`
	Pgid       int         `json:"pgid"`
	Sid        int         `json:"sid"`
	Comm       string      `json:"comm"`
	Creds      Creds       `json:"creds"`
	Umask      uint32      `json:"umask"`
	Rlimits    []Rlimit    `json:"rlimits"`
	Sigactions []Sigaction `json:"sigactions"` // signals 1..64 except SIGKILL and SIGSTOP

	// Signals queued for the whole process (the shared pending queue), in
	// queue order, as the kernel's 128-byte siginfo_t.
	SharedPending [][]byte `json:"shared_pending,omitempty"`
	// Interval timers (setitimer) and POSIX timers (timer_create).
	Itimers     []Itimer     `json:"itimers,omitempty"`
	PosixTimers []PosixTimer `json:"posix_timers,omitempty"`

	Personality    uint32   `json:"personality"`
	NoNewPrivs     bool     `json:"no_new_privs,omitempty"`
	Dumpable       int      `json:"dumpable"`
	Pdeathsig      int      `json:"pdeathsig,omitempty"`
	ChildSubreaper bool     `json:"child_subreaper,omitempty"`
	Sched          Sched    `json:"sched"`
	Seccomp        *Seccomp `json:"seccomp,omitempty"`
	// Tty is set when the process had a controlling terminal (a shell job).
	Tty bool `json:"tty,omitempty"`
	// Tpgid is the foreground process group of that terminal at the dump
	// (/proc/PID/stat field 8), 0 if none (format 1.3). For a shell job,
	// cr restore gives the terminal to that group again when it is in
	// the image.
	Tpgid int `json:"tpgid,omitempty"`
	// Stopped: the process was stopped (SIGSTOP, job control) and stays so.
	Stopped bool `json:"stopped,omitempty"`
	// Zombie: the process had exited and was not yet reaped by its parent;
	// ExitStatus is its wait status. A zombie has no other state.
	Zombie     bool `json:"zombie,omitempty"`
	ExitStatus int  `json:"exit_status,omitempty"`
	// XCompPerm is the process's permitted XSAVE features, arch_prctl
	// ARCH_GET_XCOMP_PERM (0: unknown): whether it asked for AMX.
	XCompPerm uint64 `json:"xcomp_perm,omitempty"`
}

// Itimer is one armed interval timer (ITIMER_REAL = 0, VIRTUAL = 1, PROF = 2).
type Itimer struct {
	Which      int   `json:"which"`
	ValueUs    int64 `json:"value_us"`    // time left, microseconds
	IntervalUs int64 `json:"interval_us"` // reload value, microseconds
}

// PosixTimer is one timer_create(2) timer.
type PosixTimer struct {
	ID         int32  `json:"id"`
	Clock      int32  `json:"clock"`
	Notify     int32  `json:"notify"` // sigev_notify: SIGEV_SIGNAL 0, SIGEV_NONE 1, SIGEV_THREAD_ID 4
	NotifyTid  int32  `json:"notify_tid,omitempty"`
	Signo      int32  `json:"signo"`
	SigevValue uint64 `json:"sigev_value"`
	ValueNs    int64  `json:"value_ns"`    // time left, nanoseconds (0: disarmed)
	IntervalNs int64  `json:"interval_ns"` // period, nanoseconds
}

// Sched is the scheduling policy and priority.
type Sched struct {
	Policy     int `json:"policy"` // SCHED_OTHER 0, FIFO 1, RR 2, BATCH 3, IDLE 5
	Nice       int `json:"nice"`
	RtPriority int `json:"rt_priority,omitempty"`
	// TimerSlackNs is PR_GET_TIMERSLACK.
	TimerSlackNs uint64 `json:"timer_slack_ns"`
}

// Seccomp is the task's seccomp state: mode 1 (strict) or 2 (filters).
type Seccomp struct {
	Mode    int             `json:"mode"`
	Filters []SeccompFilter `json:"filters,omitempty"` // oldest first, as they were installed
}

// SeccompFilter is one classic BPF program with its install flags.
type SeccompFilter struct {
	Flags uint64 `json:"flags"`
	Insns []byte `json:"insns"` // struct sock_filter[], 8 bytes each
}

// Creds are the task's credentials.
type Creds struct {
	Uid        [4]uint32 `json:"uid"` // real, effective, saved, fs
	Gid        [4]uint32 `json:"gid"`
	Groups     []uint32  `json:"groups"`
	CapInh     uint64    `json:"cap_inheritable"`
	CapPrm     uint64    `json:"cap_permitted"`
	CapEff     uint64    `json:"cap_effective"`
	CapBnd     uint64    `json:"cap_bounding"`
	CapAmb     uint64    `json:"cap_ambient"`
	Securebits uint32    `json:"securebits"`
}

// Rlimit is one resource limit; Cur/Max of ^0 mean unlimited.
type Rlimit struct {
	Resource int    `json:"resource"`
	Name     string `json:"name"`
	Cur      uint64 `json:"cur"`
	Max      uint64 `json:"max"`
}

// Sigaction is one signal's disposition (kernel struct sigaction).
type Sigaction struct {
	Sig      int    `json:"sig"`
	Handler  uint64 `json:"handler"` // 0 = SIG_DFL, 1 = SIG_IGN, else an address
	Flags    uint64 `json:"flags"`
	Restorer uint64 `json:"restorer"`
	Mask     uint64 `json:"mask"`
}

// Thread is one thread's CPU and signal state (core-PID.img, TagThread).
type Thread struct {
	Tid  int    `json:"tid"`
	Name string `json:"name"` // comm of the thread
	Regs Regs   `json:"regs"`
	// XSave is the full XSAVE area, as PTRACE_GETREGSET NT_X86_XSTATE
	// gives it, in the dumping machine's layout: format 1.0 only.
	XSave []byte `json:"xsave,omitempty"`
	// XState is the XSAVE state per component (format 1.1 and later).
	XState  *XState `json:"xstate,omitempty"`
	Sigmask uint64  `json:"sigmask"`
	// Syscall says the thread was stopped inside a syscall; Regs already hold
	// the values that restart it (or make it return EINTR) on resume.
	Syscall *InSyscall `json:"syscall,omitempty"`
	// ClearChildTid is the set_tid_address(2) pointer (0 if none).
	ClearChildTid uint64 `json:"clear_child_tid,omitempty"`
	// Rseq is the thread's rseq(2) registration, if any.
	Rseq *Rseq `json:"rseq,omitempty"`
	// Pending holds the signals queued for this thread, in queue order.
	Pending [][]byte `json:"pending,omitempty"`
	// Sigaltstack is the alternate signal stack, if one is set.
	Sigaltstack *Sigaltstack `json:"sigaltstack,omitempty"`
	// RobustList is the set_robust_list(2) head and length.
	RobustList    uint64 `json:"robust_list,omitempty"`
	RobustListLen uint64 `json:"robust_list_len,omitempty"`
}

// Sigaltstack is a stack_t.
type Sigaltstack struct {
	SP    uint64 `json:"sp"`
	Flags int32  `json:"flags"`
	Size  uint64 `json:"size"`
}

// Rseq is an rseq(2) registration.
type Rseq struct {
	Ptr       uint64 `json:"ptr"`
	Size      uint32 `json:"size"`
	Signature uint32 `json:"signature"`
}

// InSyscall records how an interrupted syscall was normalised.
type InSyscall struct {
	Nr     int64  `json:"nr"`
	Result int64  `json:"result"` // -ERESTART* value the kernel left in rax
	Action string `json:"action"` // "restart" or "eintr"
}

// Regs is the x86-64 user_regs_struct, with the kernel's field names.
type Regs struct {
	R15     uint64 `json:"r15"`
	R14     uint64 `json:"r14"`
	R13     uint64 `json:"r13"`
	R12     uint64 `json:"r12"`
	Rbp     uint64 `json:"rbp"`
	Rbx     uint64 `json:"rbx"`
	R11     uint64 `json:"r11"`
	R10     uint64 `json:"r10"`
	R9      uint64 `json:"r9"`
	R8      uint64 `json:"r8"`
	Rax     uint64 `json:"rax"`
	Rcx     uint64 `json:"rcx"`
	Rdx     uint64 `json:"rdx"`
	Rsi     uint64 `json:"rsi"`
	Rdi     uint64 `json:"rdi"`
	OrigRax uint64 `json:"orig_rax"`
	Rip     uint64 `json:"rip"`
	Cs      uint64 `json:"cs"`
	Eflags  uint64 `json:"eflags"`
	Rsp     uint64 `json:"rsp"`
	Ss      uint64 `json:"ss"`
	FsBase  uint64 `json:"fs_base"`
	GsBase  uint64 `json:"gs_base"`
	Ds      uint64 `json:"ds"`
	Es      uint64 `json:"es"`
	Fs      uint64 `json:"fs"`
	Gs      uint64 `json:"gs"`
}

// MM is the memory layout of a process (mm-PID.img, TagMM).
type MM struct {
	StartCode  uint64    `json:"start_code"`
	EndCode    uint64    `json:"end_code"`
	StartData  uint64    `json:"start_data"`
	EndData    uint64    `json:"end_data"`
	StartBrk   uint64    `json:"start_brk"`
	Brk        uint64    `json:"brk"`
	StartStack uint64    `json:"start_stack"`
	ArgStart   uint64    `json:"arg_start"`
	ArgEnd     uint64    `json:"arg_end"`
	EnvStart   uint64    `json:"env_start"`
	EnvEnd     uint64    `json:"env_end"`
	Auxv       []uint64  `json:"auxv"`
	Exe        FileIdent `json:"exe"`
	// ExeGhost is set when the executable had been deleted (format 1.3):
	// the id of its saved contents (a Shmem of kind ShmemGhost), which
	// restore makes the exe link point at; Exe is then not checked.
	ExeGhost uint64 `json:"exe_ghost,omitempty"`
}

// FileIdent names a file and what it was when dumped, so that restore can
// tell whether it changed.
type FileIdent struct {
	Path    string `json:"path"`
	Dev     uint64 `json:"dev"`
	Ino     uint64 `json:"ino"`
	Size    int64  `json:"size"`
	MtimeNs int64  `json:"mtime_ns"`
	Mode    uint32 `json:"mode"`
	// Proc is set when Path is a procfs path naming a process of the image
	// (/proc/PID/...: what /proc/self and /proc/thread-self resolve to):
	// restore reopens it for the restored process, not as a file on disk.
	Proc *ProcPath `json:"proc,omitempty"`
}

// ProcPath is a path below /proc/Pid, where Pid is a process of the image
// (pids are the same after restore): /proc/Pid/Rel.
type ProcPath struct {
	Pid int    `json:"pid"`           // the process the path names
	Rel string `json:"rel,omitempty"` // below /proc/Pid, e.g. "stat", "task/Pid/stat"; "" for the directory itself
}

// VMA flags (VMA.Flags) and special areas (VMA.Special).
const (
	VMAShared    = "shared"
	VMAGrowsDown = "growsdown"

	SpecialVdso       = "vdso"
	SpecialVvar       = "vvar"
	SpecialVvarVclock = "vvar_vclock"
	SpecialHeap       = "heap"
	SpecialStack      = "stack"
)

// VMA is one mapping (mm-PID.img, TagVMA).
type VMA struct {
	Start   uint64     `json:"start"`
	End     uint64     `json:"end"`
	Prot    string     `json:"prot"`  // "rwx" subset, "-" for none, as in /proc/PID/maps
	Flags   []string   `json:"flags"` // VMAShared, VMAGrowsDown
	Pgoff   uint64     `json:"pgoff"` // file offset in bytes
	File    *FileIdent `json:"file,omitempty"`
	Special string     `json:"special,omitempty"` // vdso, vvar, vvar_vclock, heap, stack
	Shmem   uint64     `json:"shmem,omitempty"`   // id of the shared memory object mapped (MAP_SHARED anonymous or memfd)
	// SysVShmid is set when the VMA is (part of) an attachment of the SysV
	// shared memory segment of that id (a SysVShm of the image; format
	// 1.2). The attachment starts at Start-Pgoff; SHM_RDONLY when the VMA
	// may not be made writable (no "mw" in VmFlags).
	SysVShmid *int     `json:"sysv_shmid,omitempty"`
	VmFlags   []string `json:"vm_flags,omitempty"` // smaps VmFlags, for information and checks
}

// Len is the size of the VMA in bytes.
func (v *VMA) Len() uint64 { return v.End - v.Start }

// Has reports whether the VMA carries flag f.
func (v *VMA) Has(f string) bool {
	for _, x := range v.Flags {
		if x == f {
			return true
		}
	}
	return false
}

// PageRun is a run of consecutive saved pages (pagemap-PID.img, TagPageRun).
type PageRun struct {
	Addr   uint64 `json:"addr"`   // first page's address
	Pages  uint64 `json:"pages"`  // number of pages
	Offset uint64 `json:"offset"` // byte offset in pages-PID.img
	CRC    uint32 `json:"crc32c"` // CRC-32C of the run's bytes
	// InParent: the pages are the parent's, shared copy-on-write since a
	// fork and never written by either; they are not stored again. Offset
	// and CRC are 0; the parent's page map (maybe pointing further up) has
	// the data for the same addresses.
	InParent bool `json:"in_parent,omitempty"`
}

// File types.
const (
	FileReg = "reg"
	FileDir = "dir"
	FileChr = "chr"
	// FileTTY is a terminal of a shell job: restore points it at cr's own
	// terminal.
	FileTTY     = "tty"
	FilePipe    = "pipe"
	FileEventfd = "eventfd"
	FileEpoll   = "epoll"
	FileMemfd   = "memfd" // Shmem names the object
	FileUnix    = "unix"  // one end of a socketpair
	FileTimerfd = "timerfd"
	FileFIFO    = "fifo" // a named pipe, reopened by path; Pipe holds its contents
	FileInet    = "inet" // an AF_INET or AF_INET6 socket; Inet holds it (format 1.2)
	// Format 1.3: signalfd(2), inotify(7), fanotify(7) and pidfd_open(2)
	// descriptors, and descriptions of deleted (or O_TMPFILE) files, whose
	// contents are a Shmem of kind ShmemGhost named by File.Shmem.
	FileSignalfd = "signalfd" // Signalfd holds the mask
	FileInotify  = "inotify"  // Inotify holds the watches
	FileFanotify = "fanotify" // Fanotify holds the flags and marks
	FilePidfd    = "pidfd"    // Pidfd names the process
	FileGhost    = "ghost"    // a deleted file; Shmem names its saved contents
	FileUDP      = "udp"      // a UDP socket (AF_INET or AF_INET6); Inet and UDP hold it (format 1.3)
	FileNetlink  = "netlink"  // a netlink socket; Netlink holds it (format 1.3)
)

// File is one open file description (files.img, TagFile); fds refer to it
// by ID, so a description shared by several fds is stored once.
type File struct {
	ID    int       `json:"id"`
	Type  string    `json:"type"`
	Flags uint32    `json:"flags"` // open flags as F_GETFL/fdinfo give them
	Pos   int64     `json:"pos"`
	Ident FileIdent `json:"ident"`
	Rdev  uint64    `json:"rdev,omitempty"` // character devices

	Shmem   uint64         `json:"shmem,omitempty"` // FileMemfd: the object
	Pipe    *Pipe          `json:"pipe,omitempty"`
	Unix    *UnixSocket    `json:"unix,omitempty"`
	Timerfd *Timerfd       `json:"timerfd,omitempty"`
	Eventfd *Eventfd       `json:"eventfd,omitempty"`
	Epoll   []EpollTarget  `json:"epoll,omitempty"`
	Inet    *InetSocket    `json:"inet,omitempty"`    // FileInet (format 1.2), FileUDP (1.3)
	UDP     *UDPSocket     `json:"udp,omitempty"`     // FileUDP (format 1.3)
	Netlink *NetlinkSocket `json:"netlink,omitempty"` // FileNetlink (format 1.3)

	Signalfd *Signalfd `json:"signalfd,omitempty"` // FileSignalfd (format 1.3)
	Inotify  *Inotify  `json:"inotify,omitempty"`  // FileInotify (format 1.3)
	Fanotify *Fanotify `json:"fanotify,omitempty"` // FileFanotify (format 1.3)
	Pidfd    *Pidfd    `json:"pidfd,omitempty"`    // FilePidfd (format 1.3)
	Pty      *Pty      `json:"pty,omitempty"`      // FilePty (format 1.3)

	// Locks are the file locks held through this open file description
	// (format 1.3, dumped with --file-locks): its flock and OFD locks, and
	// the POSIX record locks that processes of the image took through it.
	Locks []FileLock `json:"locks,omitempty"`

	Mqueue *Mqueue `json:"mqueue,omitempty"` // FileMqueue (format 1.3)

	// External names a pipe or socketpair end whose other end was held
	// by no process of the image (a pipeline with a process outside the
	// tree, a supervisor's pipe): "pipe:[INO]" or "socket:[INO]", the
	// fd link text at the dump, which is CRIU's external resource ID.
	// Restore does not make such a file: it takes the descriptor the
	// caller passes for that ID (--inherit-fd fd[N]:ID), or, for fds 0-2,
	// the caller's own fd of that number. Empty for every other file.
	// (Format 1.1.)
	External string `json:"external,omitempty"`
}

// FileMqueue is the type of a POSIX message queue's record; Mqueue holds
// it (format 1.3).
const FileMqueue = "mqueue"

// Mqueue is a POSIX message queue (mq_overview(7)), saved empty: its name
// and what mq_open(3) made it with. Its mode is Ident.Mode's permission
// bits; the description's access mode and O_NONBLOCK are File.Flags.
// Format 1.3.
type Mqueue struct {
	Name    string `json:"name"`    // "/NAME", as mq_open(3) takes it
	MaxMsg  int64  `json:"maxmsg"`  // mq_attr.mq_maxmsg
	MsgSize int64  `json:"msgsize"` // mq_attr.mq_msgsize, bytes
	Uid     uint32 `json:"uid"`
	Gid     uint32 `json:"gid"`
}

// FileLock is one file lock (fcntl(2), flock(2); the "lock:" lines of
// /proc/PID/fdinfo/FD, lock_get_status in fs/locks.c). A POSIX record
// lock belongs to its process (Pid); a flock or OFD lock belongs to the
// open file description that holds it. Format 1.3.
type FileLock struct {
	Kind  string `json:"kind"`  // LockPOSIX, LockOFD or LockFlock
	Type  string `json:"type"`  // "read" or "write"
	Start int64  `json:"start"` // first byte (0 for flock)
	End   int64  `json:"end"`   // last byte, inclusive; -1: to the end of the file, however long it grows
	// Pid is, for a POSIX lock, the process of the image that owns it;
	// for a flock, the process that took it if known (0 otherwise); 0 for
	// an OFD lock.
	Pid int `json:"pid,omitempty"`
}

// The kinds of FileLock.
const (
	LockPOSIX = "posix" // fcntl F_SETLK: owned by the process
	LockOFD   = "ofd"   // fcntl F_OFD_SETLK: owned by the open file description
	LockFlock = "flock" // flock(2): owned by the open file description, whole file
)

// Pipe is one end of a pipe. Both ends carry the pipe's inode number; the
// read end also carries the bytes that sat in the pipe at dump time.
type Pipe struct {
	ID   uint64 `json:"id"`             // pipefs inode number
	Size int    `json:"size"`           // capacity, F_GETPIPE_SZ
	Data []byte `json:"data,omitempty"` // unread bytes (read end only)
	// Chunks cuts Data, in order, into packets and runs of stream bytes;
	// absent, Data is one run of stream bytes.
	Chunks []PipeChunk `json:"chunks,omitempty"`
}

// PipeChunk is a piece of a pipe's saved bytes: one packet (written in
// packet mode, O_DIRECT: pipe(7); a read returns at most one packet) or a
// run of stream bytes.
type PipeChunk struct {
	Len    int  `json:"len"`
	Packet bool `json:"packet,omitempty"`
}

// UnixSocket is an unnamed unix socket (a socketpair end). Its peer is
// another UnixSocket of the image (0: the peer was closed).
type UnixSocket struct {
	Ino      uint64   `json:"ino"`
	Type     int      `json:"type"` // SOCK_STREAM 1, SOCK_DGRAM 2, SOCK_SEQPACKET 5
	Peer     uint64   `json:"peer,omitempty"`
	Shutdown int      `json:"shutdown,omitempty"` // 1 receive, 2 send, 3 both
	SndBuf   int      `json:"sndbuf,omitempty"`   // SO_SNDBUF
	RcvBuf   int      `json:"rcvbuf,omitempty"`   // SO_RCVBUF
	Queue    [][]byte `json:"queue,omitempty"`    // messages waiting to be read, in order

	// Format 1.3: named sockets, listeners, options and descriptors in
	// flight. Absent in older images (a socketpair end).

	// State is the unix_diag state: 1 connected (TCP_ESTABLISHED), 7
	// unconnected (TCP_CLOSE), 10 listening (TCP_LISTEN); 0 in 1.2 images.
	State int `json:"state,omitempty"`
	// Name is the bound address as getsockname(2) shows it: a path, or an
	// abstract name starting with NUL; "" unbound.
	Name string `json:"name,omitempty"`
	// File is the socket file a path name made (Name names it, or Path
	// when it was renamed since the bind or Name is relative).
	File *UnixSocketFile `json:"file,omitempty"`
	// Backlog is a listener's listen(2) backlog.
	Backlog int `json:"backlog,omitempty"`
	// Listener is, for a connection accepted from a listener of the image,
	// the listener's inode: restore connects the peer to it and accepts.
	Listener uint64 `json:"listener,omitempty"`
	// Pending lists, for a listener, the inodes of the client sockets whose
	// connections wait in accept(), oldest first; restore connects a
	// client for each (the image's socket if it has it, else one it closes).
	Pending []uint64 `json:"pending,omitempty"`
	// QueueFds gives, per message of Queue (same index), the file ids of
	// the descriptors it carries (SCM_RIGHTS): files of the image that
	// may be held by no process (in flight only).
	QueueFds [][]int `json:"queue_fds,omitempty"`
	PassCred bool    `json:"passcred,omitempty"` // SO_PASSCRED
	PassSec  bool    `json:"passsec,omitempty"`  // SO_PASSSEC
	// PeekOff is SO_PEEK_OFF plus one (0: off, the default -1).
	PeekOff int `json:"peek_off,omitempty"`
	// ExtPath: a datagram socket connected to a socket outside the tree
	// (dumped with --ext-unix-sk): restore connects it to this path again.
	ExtPath string `json:"ext_path,omitempty"`
	// PeerName is the name of a peer outside the tree (for messages).
	PeerName string `json:"peer_name,omitempty"`
}

// UnixSocketFile is the file a unix socket bound to a path made (format
// 1.3): its identity at the dump and its permissions. Restore binds at
// Path: when the path holds this file it is removed first, when it is
// missing the new file gets Mode and owner back, anything else is refused.
type UnixSocketFile struct {
	Path string `json:"path"` // absolute; differs from Name when renamed
	Dev  uint64 `json:"dev"`
	Ino  uint64 `json:"ino"`
	Mode uint32 `json:"mode"` // permission bits
	UID  uint32 `json:"uid"`
	GID  uint32 `json:"gid"`
}

// Timerfd is a timerfd: its clock, the time left (relative, whatever the
// flags it was armed with) and the period, and expirations not yet read.
type Timerfd struct {
	Clock      int    `json:"clock"`
	Ticks      uint64 `json:"ticks,omitempty"`
	ValueNs    int64  `json:"value_ns"`
	IntervalNs int64  `json:"interval_ns"`
	SetFlags   int    `json:"settime_flags,omitempty"` // as armed (TFD_TIMER_ABSTIME 1, ...)
}

// Eventfd is an eventfd's counter and mode.
type Eventfd struct {
	Count     uint64 `json:"count"`
	Semaphore bool   `json:"semaphore,omitempty"`
}

// Signalfd is a signalfd's mask (format 1.3): bit n-1 stands for signal
// n, as fdinfo "sigmask:" shows it (fs/signalfd.c). The signals it reports
// are the reading task's own pending signals (core-PID.img), not part of
// the signalfd.
type Signalfd struct {
	Mask uint64 `json:"mask"`
}

// Inotify is an inotify instance (format 1.3): its watches, in watch
// descriptor order. Events queued at the dump are not saved (reading them
// would take them from the program); QueuedBytes says how many there were.
type Inotify struct {
	Watches     []InotifyWatch `json:"watches,omitempty"`
	QueuedBytes int            `json:"queued_bytes,omitempty"` // FIONREAD at the dump, for information
}

// InotifyWatch is one watch: its descriptor (as the program knows it), the
// watched file's path at the dump and identity, and the event mask
// (IN_* bits as fdinfo "mask:" shows them, fs/notify/inotify).
type InotifyWatch struct {
	Wd   int    `json:"wd"`
	Path string `json:"path"`
	Dev  uint64 `json:"dev"` // st_dev (userspace encoding)
	Ino  uint64 `json:"ino"`
	Mask uint32 `json:"mask"`
}

// Fanotify is a fanotify group (format 1.3): fanotify_init(2)'s flags and
// event_f_flags, and its marks.
type Fanotify struct {
	Flags      uint32         `json:"flags"`       // fdinfo "flags:"
	EventFlags uint32         `json:"event_flags"` // fdinfo "event-flags:"
	Marks      []FanotifyMark `json:"marks,omitempty"`
}

// FanotifyMark is one mark: on an inode ("inode"), a mount ("mount") or
// a filesystem ("filesystem"), named by a path; with its mark flags and
// masks as fdinfo shows them (fs/notify/fdinfo.c).
type FanotifyMark struct {
	Kind        string `json:"kind"`
	Path        string `json:"path"`
	Dev         uint64 `json:"dev,omitempty"`
	Ino         uint64 `json:"ino,omitempty"`
	MFlags      uint32 `json:"mflags,omitempty"`
	Mask        uint64 `json:"mask"`
	IgnoredMask uint64 `json:"ignored_mask,omitempty"`
}

// Pidfd is a pidfd (format 1.3): the process (or, Thread set, the thread)
// it refers to, a process of the image, by its pid (equal after restore).
// Exited: the process had exited and been reaped (fdinfo "Pid: -1"); the
// restored pidfd refers to a process that has exited.
type Pidfd struct {
	Pid    int  `json:"pid"`
	Thread bool `json:"thread,omitempty"` // PIDFD_THREAD
	Exited bool `json:"exited,omitempty"`
}

// EpollTarget is one entry of an epoll interest list: the fd (in this
// process) whose file is watched, with the event mask and user data.
type EpollTarget struct {
	Fd     int    `json:"fd"`
	Events uint32 `json:"events"`
	Data   uint64 `json:"data"`
}

// Fd is one entry of a process's fd table (fds-PID.img, TagFd).
type Fd struct {
	Fd      int  `json:"fd"`
	FileID  int  `json:"file_id"`
	Cloexec bool `json:"cloexec,omitempty"`
}

// FS is a process's cwd and root (fds-PID.img, TagFS).
type FS struct {
	Cwd  FileIdent `json:"cwd"`
	Root FileIdent `json:"root"`
}

// Process gathers everything of one process.
type Process struct {
	Task    Task      `json:"task"`
	Threads []Thread  `json:"threads"`
	MM      MM        `json:"mm"`
	VMAs    []VMA     `json:"vmas"`
	PageMap []PageRun `json:"pagemap"`
	Fds     []Fd      `json:"fds"`
	FS      FS        `json:"fs"`
}

// Shared memory object kinds.
const (
	ShmemAnon  = "anon"  // MAP_SHARED|MAP_ANONYMOUS ("/dev/zero (deleted)")
	ShmemMemfd = "memfd" // memfd_create(2)
	// ShmemGhost is a deleted (or O_TMPFILE) regular file still open or
	// mapped (format 1.3): restore makes it unlinked on the same
	// filesystem (in Path's directory) with Mode, Uid, Gid, Size and the
	// saved contents. Its ID is GhostID(dev, ino).
	ShmemGhost = "ghost"
)

// Shmem is a shared memory object (files.img, TagShmem): mapped by one or
// more processes, or open as a memfd; its contents are saved once, in
// shmem-pages.img, as runs whose Addr is the offset in the object.
type Shmem struct {
	ID    uint64 `json:"id"` // inode number at dump time
	Kind  string `json:"kind"`
	Name  string `json:"name,omitempty"` // memfd name
	Size  int64  `json:"size"`
	Seals int    `json:"seals,omitempty"` // F_GET_SEALS of a memfd
	// A ghost's path at the dump (without " (deleted)"), file mode
	// (type and permission bits) and owner (format 1.3).
	Path string    `json:"path,omitempty"`
	Mode uint32    `json:"mode,omitempty"`
	Uid  uint32    `json:"uid,omitempty"`
	Gid  uint32    `json:"gid,omitempty"`
	Runs []PageRun `json:"runs,omitempty"`
}

// GhostID is the Shmem id of the deleted file (dev, ino): apart from the
// ids of shared memory objects (their inode numbers, below 2^63) by its
// top bit.
func GhostID(dev, ino uint64) uint64 {
	return 1<<63 | (dev&0x7fffff)<<40 | ino&(1<<40-1)
}

// IPCPerm is the identity and permissions of a SysV IPC object (struct
// ipc64_perm, as /proc/sysvipc/* shows it).
type IPCPerm struct {
	Key  int32  `json:"key"`  // 0: IPC_PRIVATE (also a segment marked for removal)
	ID   int    `json:"id"`   // shmid, semid or msqid, kept across restore
	Mode uint32 `json:"mode"` // permission bits (0777); for a segment also SHM_DEST 01000, SHM_LOCKED 02000 as the kernel shows them
	UID  uint32 `json:"uid"`
	GID  uint32 `json:"gid"`
	CUID uint32 `json:"cuid"` // creator
	CGID uint32 `json:"cgid"`
}

// SysVShm is a SysV shared memory segment (ipc.img, TagSysVShm; format
// 1.2). Its contents are saved in sysv-shm-pages.img as runs whose Addr is
// the offset in the segment (only the ranges holding data).
type SysVShm struct {
	IPCPerm
	Size uint64 `json:"size"` // shm_segsz, bytes
	// Removed: the segment was marked for removal (IPC_RMID while
	// attached, SHM_DEST): restore removes it again once every
	// attachment exists.
	Removed bool      `json:"removed,omitempty"`
	Runs    []PageRun `json:"runs,omitempty"`
}

// SysVSem is a SysV semaphore set (ipc.img, TagSysVSem; format 1.2).
// Per-process SEM_UNDO adjustments are not part of it (docs/DESIGN.md).
type SysVSem struct {
	IPCPerm
	Values []uint16 `json:"values"` // semval of each semaphore, GETALL order
}

// SysVMsg is a SysV message queue (ipc.img, TagSysVMsg; format 1.2).
type SysVMsg struct {
	IPCPerm
	QBytes   uint64        `json:"qbytes"` // msg_qbytes, the queue's byte limit
	Messages []SysVMessage `json:"messages,omitempty"`
}

// SysVMessage is one queued message: its type (> 0) and text.
type SysVMessage struct {
	Type int64  `json:"type"`
	Data []byte `json:"data"`
}

// SysVIPC is every SysV IPC object the image holds (ipc.img; format 1.2).
type SysVIPC struct {
	Shm []SysVShm `json:"shm,omitempty"`
	Sem []SysVSem `json:"sem,omitempty"`
	Msg []SysVMsg `json:"msg,omitempty"`
}

// Count is the number of objects (0 for nil).
func (s *SysVIPC) Count() int {
	if s == nil {
		return 0
	}
	return len(s.Shm) + len(s.Sem) + len(s.Msg)
}

// Empty reports whether there is no object.
func (s *SysVIPC) Empty() bool { return s.Count() == 0 }

// Checkpoint is a whole image in memory, apart from the pages.
type Checkpoint struct {
	Inventory Inventory  `json:"inventory"`
	Processes []*Process `json:"processes"`
	Files     []File     `json:"files"`
	Shmem     []Shmem    `json:"shmem,omitempty"`
	// IPC is nil when the image has no ipc.img (format 1.2).
	IPC *SysVIPC `json:"sysv_ipc,omitempty"`
}

// IPCFile holds the SysV IPC objects; SysVShmPagesFile their segments'
// contents. Both are absent when the image has no such object.
const (
	IPCFile          = "ipc.img"
	SysVShmPagesFile = "sysv-shm-pages.img"
)

// ShmemPagesFile holds the contents of every shared memory object.
const ShmemPagesFile = "shmem-pages.img"

// File names in an image directory.
const InventoryFile = "inventory.img"
const FilesFile = "files.img"

// CoreFile and friends name the per-process files.
func CoreFile(pid int) string    { return fmtName("core", pid) }
func MMFile(pid int) string      { return fmtName("mm", pid) }
func PageMapFile(pid int) string { return fmtName("pagemap", pid) }
func PagesFile(pid int) string   { return fmtName("pages", pid) }
func FdsFile(pid int) string     { return fmtName("fds", pid) }

// InetSocket is an AF_INET or AF_INET6 socket (FileInet, format 1.2): a TCP
// listener or an established TCP connection, with its options. Addresses
// are netip.AddrPort text: "127.0.0.1:8080", "[::1]:80", and for an
// AF_INET6 socket talking IPv4 "[::ffff:127.0.0.1]:80".
type InetSocket struct {
	Ino      uint64 `json:"ino"`      // inode number at dump time (socket:[N])
	Family   int    `json:"family"`   // AF_INET 2, AF_INET6 10
	Protocol int    `json:"protocol"` // IPPROTO_TCP 6; IPPROTO_MPTCP 262 for a listener (format 1.3)
	// State is the TCP state (include/net/tcp_states.h): 1 ESTABLISHED
	// (TCP must be set) or 10 LISTEN.
	State  int    `json:"state"`
	Local  string `json:"local"`
	Remote string `json:"remote,omitempty"` // established only
	// Backlog is a listener's listen(2) backlog as the kernel holds it.
	Backlog int `json:"backlog,omitempty"`
	// Shutdown: 1 receiving was shut down (shutdown(SHUT_RD) on an
	// established connection). Sending shut down is a closing state,
	// which cr does not save yet.
	Shutdown int         `json:"shutdown,omitempty"`
	Options  InetOptions `json:"options"`
	TCP      *TCPStream  `json:"tcp,omitempty"`
}

// InetOptions are the socket options cr keeps for an inet socket. A zero
// value means the option was at its default (the system's, for the ones a
// sysctl sets); restore leaves those alone.
type InetOptions struct {
	ReuseAddr bool `json:"reuseaddr,omitempty"` // SO_REUSEADDR
	ReusePort bool `json:"reuseport,omitempty"` // SO_REUSEPORT
	KeepAlive bool `json:"keepalive,omitempty"` // SO_KEEPALIVE
	// KeepIdle, KeepIntvl (seconds) and KeepCnt: TCP_KEEPIDLE,
	// TCP_KEEPINTVL, TCP_KEEPCNT when they differ from the dumping
	// system's net.ipv4.tcp_keepalive_{time,intvl,probes}.
	KeepIdle  int  `json:"keepidle,omitempty"`
	KeepIntvl int  `json:"keepintvl,omitempty"`
	KeepCnt   int  `json:"keepcnt,omitempty"`
	NoDelay   bool `json:"nodelay,omitempty"` // TCP_NODELAY
	Cork      bool `json:"cork,omitempty"`    // TCP_CORK
	// DeferAccept is TCP_DEFER_ACCEPT in seconds as getsockopt reads it
	// back (rounded up to a retransmission step; setting it again gives
	// the same value).
	DeferAccept int `json:"defer_accept,omitempty"`
	FastOpen    int `json:"fastopen,omitempty"`     // TCP_FASTOPEN: a listener's TFO queue length
	UserTimeout int `json:"user_timeout,omitempty"` // TCP_USER_TIMEOUT, ms
	// Congestion is TCP_CONGESTION when it differs from the dumping
	// system's net.ipv4.tcp_congestion_control.
	Congestion string `json:"congestion,omitempty"`
	// SndBuf and RcvBuf are SO_SNDBUF and SO_RCVBUF as the program set
	// them (half what getsockopt reads), only when it did (SO_BUF_LOCK).
	SndBuf       int         `json:"sndbuf,omitempty"`
	RcvBuf       int         `json:"rcvbuf,omitempty"`
	Linger       *InetLinger `json:"linger,omitempty"`       // SO_LINGER, if on
	RcvLowat     int         `json:"rcvlowat,omitempty"`     // SO_RCVLOWAT when not 1
	V6Only       bool        `json:"v6only,omitempty"`       // IPV6_V6ONLY (AF_INET6; set explicitly at restore)
	TOS          int         `json:"tos,omitempty"`          // IP_TOS
	TClass       int         `json:"tclass,omitempty"`       // IPV6_TCLASS (AF_INET6)
	FreeBind     bool        `json:"freebind,omitempty"`     // IP_FREEBIND
	Transparent  bool        `json:"transparent,omitempty"`  // IP_TRANSPARENT
	BindToDevice string      `json:"bindtodevice,omitempty"` // SO_BINDTODEVICE: interface name
	Mark         uint32      `json:"mark,omitempty"`         // SO_MARK
	Priority     int         `json:"priority,omitempty"`     // SO_PRIORITY
}

// InetLinger is struct linger with l_onoff set: close(2) waits up to
// Seconds for unsent data (0: resets the connection).
type InetLinger struct {
	Seconds int `json:"seconds"`
}

// TCPStream is the state of an established TCP connection as TCP repair
// reads it (CRIU's TcpStreamEntry; kernel net/ipv4/tcp.c do_tcp_setsockopt
// TCP_REPAIR*). Sequence numbers are the kernel's, modulo 2^32.
type TCPStream struct {
	// InqSeq is rcv_nxt: the sequence number after the last byte
	// received; RecvQueue holds the bytes received but not read, which
	// end there.
	InqSeq    uint32 `json:"inq_seq"`
	RecvQueue []byte `json:"recv_queue,omitempty"`
	// OutqSeq is write_seq: the sequence number after the last byte the
	// program wrote; SendQueue holds the bytes written but not
	// acknowledged, which end there. Its last Unsent bytes were never
	// transmitted.
	OutqSeq   uint32 `json:"outq_seq"`
	SendQueue []byte `json:"send_queue,omitempty"`
	Unsent    uint32 `json:"unsent,omitempty"`
	// OptMask is the options the handshake agreed on, tcp_info's
	// tcpi_options bits: TCPI_OPT_TIMESTAMPS 1, SACK 2, WSCALE 4.
	OptMask   uint8  `json:"opt_mask"`
	MSS       uint32 `json:"mss"`                  // TCP_MAXSEG (mss_clamp)
	SndWscale uint8  `json:"snd_wscale,omitempty"` // with WSCALE: the peer's shift
	RcvWscale uint8  `json:"rcv_wscale,omitempty"` // with WSCALE: our shift
	// Timestamp is TCP_TIMESTAMP as read (with TIMESTAMPS): the
	// connection's timestamp clock, written back as it is.
	Timestamp uint32     `json:"timestamp,omitempty"`
	Window    *TCPWindow `json:"window,omitempty"`
}

// TCPWindow is struct tcp_repair_window (TCP_REPAIR_WINDOW).
type TCPWindow struct {
	SndWl1    uint32 `json:"snd_wl1"`
	SndWnd    uint32 `json:"snd_wnd"`
	MaxWindow uint32 `json:"max_window"`
	RcvWnd    uint32 `json:"rcv_wnd"`
	RcvWup    uint32 `json:"rcv_wup"`
	// Size is the struct size the dumping kernel used (20 on Linux 6.18);
	// restore gives the same size. Extra holds the bytes past the five
	// fields above when Size > 20, as the kernel gave them.
	Size  int    `json:"size"`
	Extra []byte `json:"extra,omitempty"`
}

// UDPSocket is what a UDP socket (FileUDP, format 1.3; its addresses and
// the options it shares with TCP are in File.Inet) has besides: the
// datagrams waiting to be read and the UDP-only options.
type UDPSocket struct {
	Datagrams []Datagram `json:"datagrams,omitempty"` // in arrival order
	Broadcast bool       `json:"broadcast,omitempty"` // SO_BROADCAST
}

// Datagram is one datagram queued for reading, with the address it came
// from ("10.0.0.1:53", "[::1]:5353").
type Datagram struct {
	From string `json:"from"`
	Data []byte `json:"data"`
}

// NetlinkSocket is a netlink socket (FileNetlink, format 1.3): its
// protocol (NETLINK_ROUTE 0, ...), type (SOCK_RAW or SOCK_DGRAM), port id
// (0: unbound) and the multicast groups it joined (group numbers, from 1).
// Messages waiting in its queue are not kept.
type NetlinkSocket struct {
	Protocol int      `json:"protocol"`
	Type     int      `json:"type"`
	PortID   uint32   `json:"port_id,omitempty"`
	Groups   []uint32 `json:"groups,omitempty"`
	SndBuf   int      `json:"sndbuf,omitempty"` // SO_SNDBUF, as read
	RcvBuf   int      `json:"rcvbuf,omitempty"` // SO_RCVBUF, as read
}
