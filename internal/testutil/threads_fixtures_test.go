package testutil

import (
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// checkTwiceAndStop runs two verifications (the counter must increase) and
// stops the fixture, which must exit 0 after writing its BYE line.
func checkTwiceAndStop(t *testing.T, p *Proc) {
	t.Helper()
	n1 := p.Check(t)
	time.Sleep(20 * time.Millisecond)
	n2 := p.Check(t)
	t.Logf("counter %d -> %d", n1, n2)
	if st := p.Stop(t); st != 0 {
		t.Fatalf("exit status %d; log:\n%s", st, p.LogText())
	}
	if !strings.Contains(p.LogText(), "\nBYE counter=") {
		t.Fatalf("no BYE line; log:\n%s", p.LogText())
	}
	if p.Alive() {
		t.Fatal("still alive after Stop")
	}
}

// taskComms maps each thread id of pid to its comm.
func taskComms(t *testing.T, pid int) map[int]string {
	t.Helper()
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[int]string{}
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "comm"))
		if err != nil {
			t.Fatal(err)
		}
		m[tid] = strings.TrimSuffix(string(b), "\n")
	}
	return m
}

func TestPthreads(t *testing.T) {
	p := Start(t, BuildC(t, "pthreads", "-pthread"))
	if p.HexInfo(t, "counter") == 0 || p.HexInfo(t, "wcount") == 0 {
		t.Fatalf("zero addresses in READY: %v", p.Info)
	}
	if n := p.IntInfo(t, "threads"); n != 4 {
		t.Fatalf("threads=%d, want 4", n)
	}
	tids := p.IntsInfo(t, "tids")
	if len(tids) != 4 {
		t.Fatalf("tids=%v, want 4 of them", tids)
	}
	comms := taskComms(t, p.Pid)
	if len(comms) != 5 {
		t.Fatalf("%d threads, want 5: %v", len(comms), comms)
	}
	if comms[p.Pid] == "" {
		t.Fatalf("main thread %d missing from %v", p.Pid, comms)
	}
	for i, tid := range tids {
		if want := "worker-" + strconv.Itoa(i); comms[tid] != want {
			t.Errorf("thread %d comm %q, want %q (all: %v)", tid, comms[tid], want, comms)
		}
	}
	var names []string
	for _, c := range comms {
		names = append(names, c)
	}
	sort.Strings(names)
	t.Logf("threads: %v", names)
	checkTwiceAndStop(t, p)
}

func TestGoState(t *testing.T) {
	p := Start(t, BuildGo(t, "testdata/gostate"))
	if g := p.IntInfo(t, "goroutines"); g < 6 {
		t.Errorf("goroutines=%d, want >= 6", g)
	}
	fds := p.IntsInfo(t, "fds")
	if len(fds) < 3 || fds[0] != 0 || fds[1] != 1 || fds[2] != 2 {
		t.Errorf("fds=%v", fds)
	}
	t.Logf("READY %v", p.Info)
	checkTwiceAndStop(t, p)
}

func TestPyState(t *testing.T) {
	p := Start(t, PythonScript(t, "pystate.py"))
	if n := p.IntInfo(t, "entries"); n != 10000 {
		t.Fatalf("entries=%d, want 10000", n)
	}
	fds, err := os.ReadDir("/proc/" + strconv.Itoa(p.Pid) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	if len(fds) != 3 {
		t.Errorf("python fixture has %d fds, want 3", len(fds))
	}
	checkTwiceAndStop(t, p)
}
