package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"

	"github.com/cr-tools/cr/pkg/image"
)

func cmdVersion(args []string) (int, error) {
	c := newCommand("version", "cr version   (or cr --version)",
		`Print cr's version, the image format version it writes (it reads every
image of the same major version), the Go toolchain and platform it was
built with, and the commit it was built from (when built from a git
checkout: go build and go install record it).`,
		"cr --version")
	if err := c.parse(args, false); err != nil {
		return 0, err
	}
	writeVersion(os.Stdout)
	return 0, nil
}

func writeVersion(w io.Writer) {
	fmt.Fprintf(w, "cr %s\n", image.CRVersion)
	fmt.Fprintf(w, "image format %d.%d\n", image.FormatMajor, image.FormatMinor)
	fmt.Fprintf(w, "built with %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(w, "commit %s\n", commit())
}

// commit is the vcs.revision the Go toolchain stamped into the binary (with
// "+modified" when the tree had uncommitted changes), or "unknown".
func commit() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	rev, modified := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev == "" {
		return "unknown"
	}
	if modified {
		rev += "+modified"
	}
	return rev
}
