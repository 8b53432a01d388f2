// Package dump is the checkpoint orchestrator and half of cr's Go API:
// Run seizes a process, collects its state (registers, memory, files,
// identity, signal dispositions) and writes an image directory.
//
// Everything that cannot be saved yet is refused before anything is
// written, with an *UnsupportedError naming it. On any failure the target
// is put back exactly as it was and detached, and no image directory is
// left behind. After a successful dump the target is killed, unless
// Options.LeaveRunning. Before it kills or resumes the target, the image
// is read back and checked with restore.Check: an image restore would
// refuse fails the dump instead. Cancelling Run's context (cmd/cr does on
// SIGINT and SIGTERM), or closing Options.Abort, undoes a dump in progress
// the same way.
//
// Options.Events reports each phase (Event, Phase: frozen, collected,
// pages done/total, written, verified, killed/resumed/stopped); Options.Notify
// calls hooks at CRIU's action-script points (pkg/notify has the typed,
// go-criu-style form). This package is part of cr's supported Go API:
// docs/API.md.
//
// Open files are read by one files.Collector for the whole tree; what each
// kind of file saves is in its file of pkg/files.
package dump
