package fdinfo_test

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/cr-tools/cr/internal/testutil"
	"github.com/cr-tools/cr/pkg/fdinfo"
	"github.com/cr-tools/cr/pkg/image"
	"golang.org/x/sys/unix"
)

func TestIsTTY(t *testing.T) {
	for _, c := range []struct {
		maj, min uint32
		tty      bool
	}{{4, 1, true}, {5, 0, true}, {5, 2, true}, {136, 0, true}, {143, 7, true}, {1, 3, false}, {1, 9, false}, {144, 0, false}, {10, 200, false}} {
		if got := fdinfo.IsTTY(unix.Mkdev(c.maj, c.min)); got != c.tty {
			t.Errorf("IsTTY(%d:%d) = %v", c.maj, c.min, got)
		}
	}
}

func TestReadFiles(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "files"))
	tab, err := fdinfo.Read(p.Pid, 10, false)
	if err != nil {
		t.Fatal(err)
	}
	files := map[int]image.File{}
	for _, f := range tab.Files {
		if _, dup := files[f.ID]; dup {
			t.Errorf("file id %d twice", f.ID)
		}
		if f.ID < 10 {
			t.Errorf("file id %d below nextID 10", f.ID)
		}
		files[f.ID] = f
	}
	fds := map[int]image.Fd{}
	for i, fd := range tab.Fds {
		if i > 0 && fd.Fd <= tab.Fds[i-1].Fd {
			t.Errorf("fds not sorted: %v", tab.Fds)
		}
		fds[fd.Fd] = fd
	}
	if len(fds) != 12 || len(files) != 9 {
		t.Errorf("%d fds, %d files", len(fds), len(files))
	}
	a, dup, c, c42 := fds[p.IntInfo(t, "fd_a")], fds[p.IntInfo(t, "fd_dup")], fds[p.IntInfo(t, "fd_c")], fds[42]
	if a.FileID != dup.FileID || c.FileID != c42.FileID || a.FileID == c.FileID {
		t.Errorf("sharing: a %d dup %d c %d 42 %d", a.FileID, dup.FileID, c.FileID, c42.FileID)
	}
	if f := files[a.FileID]; f.Pos != 123 || f.Ident.Path != filepath.Join(p.Dir, "a.txt") || f.Type != image.FileReg || f.Flags&unix.O_ACCMODE != unix.O_RDWR {
		t.Errorf("a.txt %+v", f)
	}
	if f := files[fds[p.IntInfo(t, "fd_b")].FileID]; f.Pos != 50 || f.Flags&unix.O_APPEND == 0 {
		t.Errorf("b.txt %+v", f)
	}
	if f := files[fds[p.IntInfo(t, "fd_null")].FileID]; f.Type != image.FileChr || f.Rdev != unix.Mkdev(1, 3) || f.Flags&unix.O_NONBLOCK == 0 {
		t.Errorf("/dev/null %+v", f)
	}
	if !fds[p.IntInfo(t, "fd_zero")].Cloexec || !fds[p.IntInfo(t, "fd_urandom")].Cloexec || a.Cloexec {
		t.Errorf("cloexec: %+v", tab.Fds)
	}
	for _, f := range files {
		if f.Flags&0o2000000 != 0 {
			t.Errorf("O_CLOEXEC left in file flags %+v", f)
		}
	}
	fs, err := fdinfo.ReadFS(p.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if fs.Cwd.Path != p.Info["cwd"] || fs.Root.Path != "/" || fs.Cwd.Mode&unix.S_IFMT != unix.S_IFDIR {
		t.Errorf("fs %+v", fs)
	}
	p.Check(t)
}

func TestReadPipe(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "pipe"))
	_, err := fdinfo.Read(p.Pid, 1, false)
	var ue *fdinfo.UnsupportedError
	if !errors.As(err, &ue) || ue.Fd != 3 || ue.What != "a pipe" {
		t.Fatalf("error %v, want fd 3 is a pipe", err)
	}
	p.Check(t)
}
