// Command gostate is a Go fixture with runtime state spread over several
// goroutines, for checkpoint/restore tests. It follows the fixture protocol
// (see testdata/fixture.h): `gostate WORKDIR`, stdout/stderr are WORKDIR/log,
// a READY line once set up, OK/FAIL on SIGUSR1, BYE and exit 0 on SIGUSR2.
//
// State (all checked on SIGUSR1):
//   - a goroutine counting the ticks of a 10 ms time.Ticker;
//   - a mutex-protected map[string]int with 1000 deterministic entries
//     ("key-0000".."key-0999" -> value(i)); an updater goroutine increments
//     hotKey every 3 ms and counts its updates under the same lock, so
//     m[hotKey] == value(hotIdx) + updates must always hold;
//   - two goroutines playing ping-pong over unbuffered channels, counting
//     round trips (one round trip every ~2 ms);
//   - a goroutine looping in time.Sleep(20 ms), counting wake-ups;
//   - the package-level counter, incremented by main every 5 ms and on
//     every signal;
//   - the number of goroutines (runtime.NumGoroutine) seen at READY.
//
// Each check requires every count to have increased since the previous
// check (waiting up to 2 s for progress), so a restored process whose
// goroutines, timers or channels were lost fails, and so does one whose
// counts restarted.
//
// READY line: "READY counter=0x0 goroutines=N fds=0,1,2,..." where fds are
// the descriptors open once set up. Besides 0-2 they are the Go runtime's:
// its cgroup CPU limit files (opened before main; typically fds 3 and 4 for
// cgroup v1, 3 for v2) and the netpoller's epoll fd and eventfd (opened by
// the first timer).
package main

import (
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	nEntries = 1000
	hotIdx   = 500
)

var (
	counter    atomic.Uint64 // package-level counter
	ticks      atomic.Uint64 // 10 ms ticker ticks
	roundTrips atomic.Uint64 // ping-pong round trips
	sleeps     atomic.Uint64 // time.Sleep wake-ups

	mu      sync.Mutex
	m       map[string]int
	updates uint64 // guarded by mu

	baseGoroutines int
	last           struct{ counter, ticks, roundTrips, sleeps, updates uint64 }
)

func key(i int) string { return fmt.Sprintf("key-%04d", i) }

// value is the deterministic initial value of entry i.
func value(i int) int { return (i*i*7919 + i*31 + 17) % 1000003 }

var hotKey = key(hotIdx)

func out(format string, args ...any) {
	os.Stdout.Write([]byte(fmt.Sprintf(format, args...)))
}

// listFDs returns the open fds, read from /proc/self/fd with raw syscalls
// (os.Open would initialise the runtime's netpoller).
func listFDs() ([]int, error) {
	dfd, err := syscall.Open("/proc/self/fd", syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer syscall.Close(dfd)
	var fds []int
	buf := make([]byte, 8192)
	for {
		n, err := syscall.ReadDirent(dfd, buf)
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			break
		}
		_, _, names := syscall.ParseDirent(buf[:n], -1, nil)
		for _, name := range names {
			if fd, err := strconv.Atoi(name); err == nil && fd != dfd {
				fds = append(fds, fd)
			}
		}
	}
	sort.Ints(fds)
	return fds, nil
}

// isRuntimeFD reports whether fd may be one of the Go runtime's own fds:
//   - the netpoller's epoll fd and eventfd (opened lazily, by the first timer
//     or pollable os.File);
//   - the cgroup CPU limit files (cgroup v2 cpu.max, v1 cpu.cfs_quota_us and
//     cpu.cfs_period_us) that the runtime opens in schedinit, before main,
//     and keeps open to re-read the limit every second (cgroup-aware
//     GOMAXPROCS, Go 1.25+). Closing them would make sysmon read whatever
//     file later reuses the fd number.
func isRuntimeFD(fd int) bool {
	target, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return false
	}
	switch target {
	case "anon_inode:[eventpoll]", "anon_inode:[eventfd]":
		return true
	}
	if strings.HasPrefix(target, "/sys/fs/cgroup/") {
		switch target[strings.LastIndexByte(target, '/')+1:] {
		case "cpu.max", "cpu.cfs_quota_us", "cpu.cfs_period_us":
			return true
		}
	}
	return false
}

// closeInheritedFDs closes fds >= 3 except the runtime's own (see
// isRuntimeFD). It runs first thing in main.
func closeInheritedFDs() {
	fds, err := listFDs()
	if err != nil {
		for fd := 3; fd < 1024; fd++ {
			if !isRuntimeFD(fd) {
				syscall.Close(fd)
			}
		}
		return
	}
	for _, fd := range fds {
		if fd >= 3 && !isRuntimeFD(fd) {
			syscall.Close(fd)
		}
	}
}

func ticker() {
	t := time.NewTicker(10 * time.Millisecond)
	for range t.C {
		ticks.Add(1)
	}
}

func updater() {
	for {
		mu.Lock()
		m[hotKey]++
		updates++
		mu.Unlock()
		time.Sleep(3 * time.Millisecond)
	}
}

func pinger(ping chan<- int, pong <-chan int) {
	for i := 1; ; i++ {
		ping <- i
		if got := <-pong; got != i+1 {
			out("FAIL ping-pong: sent %d, got back %d\n", i, got)
			os.Exit(1)
		}
		roundTrips.Add(1)
		time.Sleep(2 * time.Millisecond)
	}
}

func ponger(ping <-chan int, pong chan<- int) {
	for v := range ping {
		pong <- v + 1
	}
}

func sleeper() {
	for {
		time.Sleep(20 * time.Millisecond)
		sleeps.Add(1)
	}
}

// progress waits up to the deadline for get() to exceed *prev, then records
// the new value. It returns an error message if there was no progress.
func progress(what string, get func() uint64, prev *uint64, deadline time.Time) string {
	v := get()
	for v <= *prev && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
		v = get()
	}
	if v <= *prev {
		return fmt.Sprintf("%s did not increase: %d (previous check %d)", what, v, *prev)
	}
	*prev = v
	return ""
}

func verify() string {
	mu.Lock()
	n := len(m)
	var bad string
	for i := 0; i < nEntries && bad == ""; i++ {
		k := key(i)
		v, ok := m[k]
		switch {
		case !ok:
			bad = fmt.Sprintf("map lacks %s", k)
		case i == hotIdx:
			if v != value(i)+int(updates) {
				bad = fmt.Sprintf("map[%s]=%d, want %d+%d updates", k, v, value(i), updates)
			}
		case v != value(i):
			bad = fmt.Sprintf("map[%s]=%d, want %d", k, v, value(i))
		}
	}
	mu.Unlock()
	if n != nEntries {
		return fmt.Sprintf("map has %d entries, want %d", n, nEntries)
	}
	if bad != "" {
		return bad
	}

	deadline := time.Now().Add(2 * time.Second)
	for _, p := range []struct {
		what string
		get  func() uint64
		prev *uint64
	}{
		{"counter", counter.Load, &last.counter},
		{"ticker ticks", ticks.Load, &last.ticks},
		{"ping-pong round trips", roundTrips.Load, &last.roundTrips},
		{"sleeper wake-ups", sleeps.Load, &last.sleeps},
		{"map updates", func() uint64 { mu.Lock(); defer mu.Unlock(); return updates }, &last.updates},
	} {
		if msg := progress(p.what, p.get, p.prev, deadline); msg != "" {
			return msg
		}
	}

	// Goroutine count must match READY's (allow for transient runtime
	// goroutines, e.g. cleanups, for up to a second).
	g := runtime.NumGoroutine()
	for end := time.Now().Add(time.Second); g != baseGoroutines && time.Now().Before(end); {
		time.Sleep(5 * time.Millisecond)
		g = runtime.NumGoroutine()
	}
	if g != baseGoroutines {
		return fmt.Sprintf("%d goroutines, want %d", g, baseGoroutines)
	}
	return ""
}

func main() {
	closeInheritedFDs()
	if len(os.Args) < 2 {
		out("usage: gostate WORKDIR\n")
		os.Exit(2)
	}

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2)

	m = make(map[string]int, nEntries)
	for i := 0; i < nEntries; i++ {
		m[key(i)] = value(i)
	}

	ping, pong := make(chan int), make(chan int)
	go ticker()
	go updater()
	go pinger(ping, pong)
	go ponger(ping, pong)
	go sleeper()
	beat := time.NewTicker(5 * time.Millisecond)

	// Wait until every goroutine has made progress.
	for ticks.Load() == 0 || roundTrips.Load() == 0 || sleeps.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	counter.Add(1)
	baseGoroutines = runtime.NumGoroutine()
	fds, err := listFDs()
	var fdList []string
	for _, fd := range fds {
		fdList = append(fdList, strconv.Itoa(fd))
	}
	if err != nil {
		fdList = []string{"?"}
	}
	out("READY counter=0x0 goroutines=%d fds=%s\n", baseGoroutines, strings.Join(fdList, ","))

	for {
		select {
		case <-beat.C:
			counter.Add(1)
		case sig := <-sigs:
			n := counter.Add(1)
			if sig == syscall.SIGUSR2 {
				out("BYE counter=%d\n", n)
				os.Exit(0)
			}
			if msg := verify(); msg != "" {
				out("FAIL %s\n", msg)
			} else {
				out("OK counter=%d\n", counter.Load())
			}
		}
	}
}
