package procfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Stat holds the fields of /proc/PID/stat that cr uses.
type Stat struct {
	Pid        int
	Comm       string
	State      byte
	Ppid       int
	Pgrp       int
	Session    int
	TtyNr      int
	Tpgid      int // foreground process group of the controlling terminal (-1: none)
	NumThreads int
	StartTime  uint64
	StartCode  uint64
	EndCode    uint64
	StartStack uint64
	StartData  uint64
	EndData    uint64
	StartBrk   uint64
	ArgStart   uint64
	ArgEnd     uint64
	EnvStart   uint64
	EnvEnd     uint64
	ExitCode   int // field 52: the wait status of a zombie
}

// ErrNoProcess says the process does not exist (any more): its /proc
// directory is gone, or it was reaped between the open and the read of one
// of its files.
var ErrNoProcess = errors.New("no such process")

// gone reports whether err from opening, reading or listing a file under
// /proc/PID means that the process has exited and been reaped: ENOENT when
// the directory is gone before the open, ESRCH when the task was released
// after the open (fs/proc/base.c: get_proc_task fails in the read).
func gone(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT)
}

func read(pid int, name string) ([]byte, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, name))
	if err != nil && gone(err) {
		return nil, fmt.Errorf("process %d: %w", pid, ErrNoProcess)
	}
	return b, err
}

// ReadStat parses /proc/PID/stat; ErrNoProcess if the process is gone.
func ReadStat(pid int) (*Stat, error) {
	b, err := read(pid, "stat")
	if err != nil {
		return nil, err
	}
	return ParseStat(string(b))
}

// ParseStat parses the text of a stat file.
func ParseStat(s string) (*Stat, error) {
	open := strings.IndexByte(s, '(')
	close := strings.LastIndexByte(s, ')')
	if open < 0 || close < open {
		return nil, fmt.Errorf("malformed stat: %q", s)
	}
	st := &Stat{Comm: s[open+1 : close]}
	pid, err := strconv.Atoi(strings.TrimSpace(s[:open]))
	if err != nil {
		return nil, fmt.Errorf("malformed stat: %q", s)
	}
	st.Pid = pid
	f := strings.Fields(s[close+1:])
	// f[0] is field 3 (state).
	if len(f) < 49 {
		return nil, fmt.Errorf("stat has %d fields, expected at least 51", len(f)+2)
	}
	st.State = f[0][0]
	u := func(field int) uint64 { v, _ := strconv.ParseUint(f[field-3], 10, 64); return v }
	i := func(field int) int { v, _ := strconv.Atoi(f[field-3]); return v }
	st.Ppid, st.Pgrp, st.Session, st.TtyNr = i(4), i(5), i(6), i(7)
	st.Tpgid = i(8)
	st.NumThreads = i(20)
	st.StartTime = u(22)
	st.StartCode, st.EndCode, st.StartStack = u(26), u(27), u(28)
	st.StartData, st.EndData, st.StartBrk = u(45), u(46), u(47)
	st.ArgStart, st.ArgEnd, st.EnvStart, st.EnvEnd = u(48), u(49), u(50), u(51)
	if len(f) >= 50 {
		st.ExitCode = i(52)
	}
	return st, nil
}

// Status holds the fields of /proc/PID/status that cr uses.
type Status struct {
	Fields map[string]string
}

// ReadStatus parses /proc/PID/status; ErrNoProcess if the process is gone.
func ReadStatus(pid int) (*Status, error) {
	b, err := read(pid, "status")
	if err != nil {
		return nil, err
	}
	st := &Status{Fields: map[string]string{}}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok {
			st.Fields[k] = strings.TrimSpace(v)
		}
	}
	return st, nil
}

// Uint32s returns the whitespace-separated numbers of a field (Uid, Gid, Groups).
func (s *Status) Uint32s(key string) []uint32 {
	var out []uint32
	for _, f := range strings.Fields(s.Fields[key]) {
		v, _ := strconv.ParseUint(f, 10, 32)
		out = append(out, uint32(v))
	}
	return out
}

// Hex returns a hexadecimal field (SigPnd, SigBlk, CapEff, ...).
func (s *Status) Hex(key string) uint64 {
	v, _ := strconv.ParseUint(s.Fields[key], 16, 64)
	return v
}

// Int returns a decimal field; Umask is octal.
func (s *Status) Int(key string) int64 {
	base := 10
	if key == "Umask" {
		base = 8
	}
	v, _ := strconv.ParseInt(strings.Fields(s.Fields[key] + " 0")[0], base, 64)
	return v
}

// ReadAuxv returns /proc/PID/auxv as 64-bit words; ErrNoProcess if the
// process is gone.
func ReadAuxv(pid int) ([]uint64, error) {
	b, err := read(pid, "auxv")
	if err != nil {
		return nil, err
	}
	out := make([]uint64, len(b)/8)
	for i := range out {
		out[i] = binary.LittleEndian.Uint64(b[i*8:])
	}
	return out, nil
}

// Tids lists the threads of a process; ErrNoProcess if it is gone.
func Tids(pid int) ([]int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		if gone(err) {
			return nil, fmt.Errorf("process %d: %w", pid, ErrNoProcess)
		}
		return nil, err
	}
	var out []int
	for _, e := range ents {
		if t, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, t)
		}
	}
	return out, nil
}

// Children lists the children of every thread of pid. A thread that exits
// meanwhile is skipped; ErrNoProcess if the whole process is gone.
func Children(pid int) ([]int, error) {
	tids, err := Tids(pid)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, t := range tids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, t))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
	}
	return out, nil
}

// Groups reads the process group and session of pid from /proc/PID/stat
// (fields 5 and 6, proc(5)) into nothing but a stack buffer: the scan of
// every process that a dump makes (a process outside the tree in one of its
// sessions) costs ~5 µs a process this way, against ~30 µs for ReadStat.
// ErrNoProcess if the process is gone.
func Groups(pid int) (pgrp, session int, err error) {
	var path [32]byte
	p := strconv.AppendInt(append(path[:0], "/proc/"...), int64(pid), 10)
	p = append(p, "/stat\x00"...)
	fd, err := unix.Open(unix.ByteSliceToString(p), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		if gone(err) {
			return 0, 0, fmt.Errorf("process %d: %w", pid, ErrNoProcess)
		}
		return 0, 0, err
	}
	var buf [512]byte
	n, err := unix.Read(fd, buf[:])
	unix.Close(fd)
	if err != nil {
		if gone(err) {
			return 0, 0, fmt.Errorf("process %d: %w", pid, ErrNoProcess)
		}
		return 0, 0, err
	}
	b := buf[:n]
	// "pid (comm) state ppid pgrp session ...": comm may hold anything,
	// so count fields after its last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("malformed stat of pid %d", pid)
	}
	var f [4]int // state, ppid, pgrp, session: where each begins
	k := 0
	for j := i + 1; j < len(b) && k < 4; j++ {
		if b[j-1] == ' ' && b[j] != ' ' {
			f[k] = j
			k++
		}
	}
	if k < 4 {
		return 0, 0, fmt.Errorf("malformed stat of pid %d", pid)
	}
	num := func(at int) int {
		v := 0
		for ; at < len(b) && b[at] >= '0' && b[at] <= '9'; at++ {
			v = v*10 + int(b[at]-'0')
		}
		return v
	}
	return num(f[2]), num(f[3]), nil
}
