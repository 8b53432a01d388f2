package files_test

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/cr-tools/cr/internal/testutil"
	fdinfo "github.com/cr-tools/cr/pkg/files"
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
	tab, err := fdinfo.Read(p.Pid, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	byFd := map[int]image.File{}
	for _, fd := range tab.Fds {
		for _, f := range tab.Files {
			if f.ID == fd.FileID {
				byFd[fd.Fd] = f
			}
		}
	}
	r, w := byFd[p.IntInfo(t, "pipe_r")], byFd[p.IntInfo(t, "pipe_w")]
	if r.Type != image.FilePipe || w.Type != image.FilePipe || r.Pipe.ID != w.Pipe.ID {
		t.Fatalf("pipe ends %+v %+v", r, w)
	}
	if string(r.Pipe.Data) != "hello pipe" || len(w.Pipe.Data) != 0 || r.Pipe.Size < 4096 {
		t.Errorf("pipe contents %q (write end %q), size %d", r.Pipe.Data, w.Pipe.Data, r.Pipe.Size)
	}
	if r.Flags&unix.O_NONBLOCK == 0 || w.Flags&unix.O_NONBLOCK != 0 {
		t.Errorf("pipe flags %#o %#o", r.Flags, w.Flags)
	}
	ev := byFd[p.IntInfo(t, "eventfd")]
	if ev.Type != image.FileEventfd || ev.Eventfd.Count != 5 {
		t.Errorf("eventfd %+v", ev)
	}
	ep := byFd[p.IntInfo(t, "epoll")]
	want := []image.EpollTarget{{Fd: p.IntInfo(t, "pipe_r"), Events: unix.EPOLLIN, Data: 0x1111}, {Fd: p.IntInfo(t, "eventfd"), Events: unix.EPOLLIN, Data: 0x2222}}
	if ep.Type != image.FileEpoll || len(ep.Epoll) != 2 {
		t.Fatalf("epoll %+v", ep)
	}
	for _, w := range want {
		found := false
		for _, e := range ep.Epoll {
			// The kernel adds EPOLLERR|EPOLLHUP to every mask.
			found = found || e.Fd == w.Fd && e.Data == w.Data && e.Events&^(unix.EPOLLERR|unix.EPOLLHUP) == w.Events
		}
		if !found {
			t.Errorf("epoll targets %+v lack %+v (the registration fd was closed; the target must resolve to the fd that holds the file)", ep.Epoll, w)
		}
	}
	p.Check(t)
	p.Check(t)
}

func TestReadSocketUnsupported(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.Start(t, testutil.BuildC(t, "socket"))
	_, err := fdinfo.Read(p.Pid, 1, false)
	var ue *fdinfo.UnsupportedError
	if !errors.As(err, &ue) || ue.Fd != 3 || ue.What != "a TCP/IP (AF_INET) socket" {
		t.Fatalf("error %v, want fd 3 is a socket", err)
	}
	p.Check(t)
}
