package image

// FilePty is one end of a pseudo-terminal pair inside the tree (format
// 1.3): the master (/dev/ptmx or /dev/pts/ptmx), a slave (/dev/pts/N) or
// /dev/tty standing for a session's controlling terminal that is such a
// slave. File.Pty holds it.
const FilePty = "pty"

// Pty roles (Pty.Role).
const (
	PtyMaster = "master" // an fd of /dev/ptmx: the pair's state is here
	PtySlave  = "slave"  // an fd of /dev/pts/N
	PtyCtty   = "tty"    // an fd of /dev/tty whose controlling terminal was /dev/pts/N
)

// Pty is one end of a pseudo-terminal pair (pty(7), devpts). The pair's
// state (termios, window size, modes, the session it controls) is carried
// by its master record, of which a pair has exactly one (every master fd is
// one open of /dev/ptmx); slave and /dev/tty records name the pair by its
// Index. Sources: drivers/tty/pty.c, drivers/tty/tty_io.c, tty_ioctl(4).
type Pty struct {
	Index int    `json:"index"` // N of /dev/pts/N (TIOCGPTN; fdinfo tty-index)
	Role  string `json:"role"`  // PtyMaster, PtySlave or PtyCtty

	// The master record only.
	Termios *Termios `json:"termios,omitempty"` // of the slave side (TCGETS2 on the master)
	Winsize *Winsize `json:"winsize,omitempty"` // TIOCGWINSZ
	Packet  bool     `json:"packet,omitempty"`  // packet mode (TIOCGPKT)
	Locked  bool     `json:"locked,omitempty"`  // slave opens refused (TIOCGPTLCK)
	// MasterExcl and SlaveExcl: exclusive mode (TIOCGEXCL) of each side.
	MasterExcl bool `json:"master_excl,omitempty"`
	SlaveExcl  bool `json:"slave_excl,omitempty"`
	// SlaveClosed: the slave had been opened and every open of it closed
	// (the master's reads fail with EIO, its poll says POLLHUP).
	SlaveClosed bool `json:"slave_closed,omitempty"`
	// Sid is the session whose controlling terminal the slave is (0:
	// none), Fg the terminal's foreground process group (0: none).
	Sid int `json:"sid,omitempty"`
	Fg  int `json:"fg,omitempty"`
}

// Termios is struct termios2 (asm-generic/termbits.h): the four flag words,
// the line discipline, the control characters (NCCS = 19) and the speeds.
type Termios struct {
	Iflag  uint32 `json:"iflag"`
	Oflag  uint32 `json:"oflag"`
	Cflag  uint32 `json:"cflag"`
	Lflag  uint32 `json:"lflag"`
	Line   uint8  `json:"line"`
	Cc     []byte `json:"cc"`
	Ispeed uint32 `json:"ispeed"`
	Ospeed uint32 `json:"ospeed"`
}

// Winsize is struct winsize (TIOCGWINSZ): rows and columns in characters,
// the size in pixels.
type Winsize struct {
	Row    uint16 `json:"row"`
	Col    uint16 `json:"col"`
	Xpixel uint16 `json:"xpixel,omitempty"`
	Ypixel uint16 `json:"ypixel,omitempty"`
}
