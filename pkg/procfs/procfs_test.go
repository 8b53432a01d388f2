package procfs

import (
	"errors"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// hammer starts short-lived children (each exits at once and is reaped by
// the test) for about d, and calls read(pid) on each in a tight loop from
// another goroutine until read reports the process gone. Every error must
// be ErrNoProcess: a child reaped between the open and the read of one of
// its files (ESRCH) is gone, not a failure.
func hammer(t *testing.T, d time.Duration, read func(pid int) error) {
	t.Helper()
	deadline := time.Now().Add(d)
	n := 0
	for time.Now().Before(deadline) {
		p, err := os.StartProcess("/bin/true", []string{"true"}, &os.ProcAttr{})
		if err != nil {
			t.Skipf("cannot start /bin/true: %v", err)
		}
		var wg sync.WaitGroup
		wg.Add(1)
		var bad error
		go func() {
			defer wg.Done()
			for {
				err := read(p.Pid)
				if err == nil {
					continue
				}
				if !errors.Is(err, ErrNoProcess) {
					bad = err
				}
				return
			}
		}()
		if _, err := p.Wait(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if bad != nil {
			t.Fatalf("child %d (run %d): read of an exiting process failed with %v, want ErrNoProcess", p.Pid, n, bad)
		}
		n++
	}
	t.Logf("%d children", n)
}

func TestReadStatRacesWithExit(t *testing.T) {
	hammer(t, time.Second/2, func(pid int) error { _, err := ReadStat(pid); return err })
}

func TestReadStatusRacesWithExit(t *testing.T) {
	hammer(t, time.Second/4, func(pid int) error { _, err := ReadStatus(pid); return err })
}

func TestTidsRacesWithExit(t *testing.T) {
	hammer(t, time.Second/4, func(pid int) error {
		if _, err := Tids(pid); err != nil {
			return err
		}
		_, err := Children(pid)
		return err
	})
}

func TestReadAuxvRacesWithExit(t *testing.T) {
	hammer(t, time.Second/4, func(pid int) error { _, err := ReadAuxv(pid); return err })
}

// TestReadAfterReap: the deterministic form of the race: a stat file
// opened while the process lived and read after it was reaped.
func TestReadAfterReap(t *testing.T) {
	p, err := os.StartProcess("/bin/sleep", []string{"sleep", "10"}, &os.ProcAttr{})
	if err != nil {
		t.Skipf("cannot start /bin/sleep: %v", err)
	}
	f, err := os.Open("/proc/" + strconv.Itoa(p.Pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p.Kill()
	p.Wait()
	_, err = f.Read(make([]byte, 4096))
	if !gone(err) {
		t.Fatalf("read of a reaped process's stat: %v, want a 'gone' error", err)
	}
}

func TestGroups(t *testing.T) {
	pgrp, sid, err := Groups(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if pgrp != unix.Getpgrp() {
		t.Errorf("pgrp %d, want %d", pgrp, unix.Getpgrp())
	}
	want, _ := unix.Getsid(0)
	if sid != want {
		t.Errorf("session %d, want %d", sid, want)
	}
	st, err := ReadStat(1)
	if err != nil {
		t.Fatal(err)
	}
	if pgrp, sid, err = Groups(1); err != nil || pgrp != st.Pgrp || sid != st.Session {
		t.Errorf("Groups(1) = %d, %d, %v; stat says %d, %d", pgrp, sid, err, st.Pgrp, st.Session)
	}
	if _, _, err := Groups(1 << 30); !errors.Is(err, ErrNoProcess) {
		t.Errorf("Groups of no process: %v", err)
	}
}
