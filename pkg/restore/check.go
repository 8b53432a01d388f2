package restore

import (
	"github.com/cr-tools/cr/pkg/files"
	"github.com/cr-tools/cr/pkg/image"
)

// Check loads the image in dir with restore's own loader (files.Load: the
// framing, every record, the page maps against the pages files' sizes, each
// file record checked by its kind) and
// runs every check Run makes before it creates anything (validate), except
// those that need the dumped processes gone or depend on who restores:
//
//   - whether each pid and tid is free (the dumped processes still hold
//     them while a dump checks its image);
//   - whether cr has a terminal to give a shell job.
//
// It does not read the page data (a dump compares the checksums it computed
// while writing instead; Run checks them with image.VerifyPages). The image
// is checked as restore would take it: with --shell-job if it was dumped as
// a shell job, without --force-kernel. pkg/dump calls it before it kills or
// resumes the target (invariant 2 of docs/DESIGN.md). It returns the loaded
// image, or the error restore would fail with.
func Check(dir string) (*image.Checkpoint, error) {
	ck, err := files.Load(dir)
	if err != nil {
		return nil, err
	}
	t := &treeRestore{opt: Options{Dir: dir, ShellJob: ck.Inventory.Options.ShellJob, FileLocks: ck.Inventory.Options.FileLocks}, ck: ck, checkOnly: true}
	t.open = files.NewOpener(t, ck)
	if err := t.validate(); err != nil {
		return nil, err
	}
	return ck, nil
}
