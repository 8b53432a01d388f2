// Package notify is the typed form of the hooks dump.Run and restore.Run
// call at CRIU's action-script points (criu/action-scripts.c), shaped as
// go-criu's Notify interface (github.com/checkpoint-restore/go-criu,
// notify.go): a Notify value, turned by Func into the low-level
// func(action string, pid int) error that dump.Options.Notify and
// restore.Options.Notify take.
//
// Part of cr's supported Go API (docs/API.md).
package notify

// The actions, as CRIU names them; dump.Action* and restore.Action* are
// the same strings.
const (
	PreDump       = "pre-dump"
	PostDump      = "post-dump"
	PreRestore    = "pre-restore"
	PostRestore   = "post-restore"
	NetworkLock   = "network-lock"
	NetworkUnlock = "network-unlock"
)

// Notify receives the hooks of a dump or a restore. An error aborts the
// step (see dump.Options.Notify and restore.Options.Notify for what an
// abort at each point leaves). Embed NoNotify to implement only some.
type Notify interface {
	// PreDump: before the tree is frozen.
	PreDump() error
	// PostDump: the image is complete and in place, the tree still frozen.
	PostDump() error
	// PreRestore: before the image is read.
	PreRestore() error
	// PostRestore: every process is rebuilt, none runs yet; pid is the
	// root's.
	PostRestore(pid int) error
	// NetworkLock: the dump has locked the network of the tree's TCP
	// connections.
	NetworkLock() error
	// NetworkUnlock: the restore has lifted the lock (every socket is
	// rebuilt; the restored tree is about to run).
	NetworkUnlock() error
}

// NoNotify implements Notify with hooks that do nothing.
type NoNotify struct{}

func (NoNotify) PreDump() error        { return nil }
func (NoNotify) PostDump() error       { return nil }
func (NoNotify) PreRestore() error     { return nil }
func (NoNotify) PostRestore(int) error { return nil }
func (NoNotify) NetworkLock() error    { return nil }
func (NoNotify) NetworkUnlock() error  { return nil }

// Func adapts n to the low-level hook of dump.Options.Notify and
// restore.Options.Notify. An action it does not know (one a later cr may
// add) is ignored.
func Func(n Notify) func(action string, pid int) error {
	return func(action string, pid int) error {
		switch action {
		case PreDump:
			return n.PreDump()
		case PostDump:
			return n.PostDump()
		case PreRestore:
			return n.PreRestore()
		case PostRestore:
			return n.PostRestore(pid)
		case NetworkLock:
			return n.NetworkLock()
		case NetworkUnlock:
			return n.NetworkUnlock()
		}
		return nil
	}
}
