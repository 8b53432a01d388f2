package testutil

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) { Main(m) }

// Fixtures following the full protocol: READY, OK on SIGUSR1, BYE on SIGUSR2.
var loopFixtures = []struct {
	name  string
	flags []string
	keys  []string // READY keys that must be present
}{
	{"anon", nil, []string{"anon", "anon_len", "heap", "heap_len", "data", "bss"}},
	{"sparse", nil, []string{"sparse", "sparse_len", "touched", "readonly", "readonly_len"}},
	{"filemap", nil, []string{"priv", "ro", "shared", "shared_len", "cow_pages"}},
	{"files", nil, []string{"fd_a", "off_a", "fd_b", "fd_c", "fd_dir", "fd_null", "fd_zero", "fd_urandom", "fd_dup", "fd_c42"}},
	{"signals", nil, []string{"on_usr1", "on_hup", "on_alrm", "blocked"}},
	{"spin_avx", []string{"-mavx512f", "-mavx2"}, []string{"regs", "fsbase", "tls_data", "mxcsr", "r12"}},
	{"pipe", nil, []string{"pipe_r", "pipe_w"}},
	{"counter", nil, []string{"count"}},
}

func TestLoopFixtures(t *testing.T) {
	RequireRoot(t)
	for _, f := range loopFixtures {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			if f.name == "spin_avx" {
				RequireAVX512(t)
			}
			p := Start(t, BuildC(t, f.name, f.flags...))
			if p.HexInfo(t, "counter") == 0 {
				t.Fatal("counter address is zero")
			}
			for _, k := range f.keys {
				if _, ok := p.Info[k]; !ok {
					t.Errorf("READY line lacks %q: %v", k, p.Info)
				}
			}
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
		})
	}
}

func TestSparseInfo(t *testing.T) {
	RequireRoot(t)
	p := Start(t, BuildC(t, "sparse"))
	got := p.IntsInfo(t, "touched")
	if len(got) != 4 || got[0] != 0 || got[1] != 17 || got[2] != 1000 || got[3] != 16383 {
		t.Fatalf("touched=%v", got)
	}
	p.Check(t)
}

func TestCounterLines(t *testing.T) {
	RequireRoot(t)
	p := Start(t, BuildC(t, "counter"))
	prev := 0
	for i := 0; i < 3; i++ {
		l := p.WaitLine(t, "count ", 2*time.Second)
		n, err := strconv.Atoi(strings.TrimPrefix(l, "count "))
		if err != nil || n <= prev {
			t.Fatalf("bad count line %q after %d", l, prev)
		}
		prev = n
	}
	p.Check(t)
}

func TestSeed(t *testing.T) {
	RequireRoot(t)
	p := Start(t, BuildC(t, "seed"))
	p.Check(t)
	if ws := p.Wait(t, 5*time.Second); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("wait status %v", ws)
	}
	b, err := os.ReadFile(filepath.Join(p.Dir, "hello.txt"))
	if err != nil || string(b) != "hello, world!\nworld, hello!\n" {
		t.Fatalf("hello.txt = %q, %v", b, err)
	}
}

func TestExits(t *testing.T) {
	RequireRoot(t)
	p := Start(t, BuildC(t, "exits"), "30")
	if ws := p.Wait(t, 5*time.Second); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("wait status %v", ws)
	}
	if p.Alive() {
		t.Fatal("alive after exit")
	}
}

func TestGoThreads(t *testing.T) {
	RequireRoot(t)
	p := Start(t, BuildGo(t, "testdata/gothreads"))
	tasks, err := os.ReadDir("/proc/" + strconv.Itoa(p.Pid) + "/task")
	if err != nil || len(tasks) < 2 {
		t.Fatalf("expected several threads, got %d (%v)", len(tasks), err)
	}
	p.Check(t)
	p.Check(t)
	if st := p.Stop(t); st != 0 {
		t.Fatalf("exit status %d", st)
	}
}

func TestKillAndAdopt(t *testing.T) {
	RequireRoot(t)
	p := Start(t, BuildC(t, "files"))
	fds, err := os.ReadDir("/proc/" + strconv.Itoa(p.Pid) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	// 0-2, a b c dir null zero urandom dup, 42: no stray fds.
	if len(fds) != 12 {
		t.Errorf("fixture has %d fds, want 12", len(fds))
	}
	if p.IntInfo(t, "umask") != 0o27 {
		t.Errorf("umask info %q", p.Info["umask"])
	}
	q := Adopt(t, p.Pid, p.Dir)
	if q.Info["fd_a"] != p.Info["fd_a"] {
		t.Fatalf("adopted info %v", q.Info)
	}
	q.Check(t)
	p.Kill()
	if p.Alive() {
		t.Fatal("alive after Kill")
	}
}
