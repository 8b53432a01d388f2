// Package dump is the checkpoint orchestrator and half of cr's Go API:
// Run seizes a process, collects its state (registers, memory, files,
// identity, signal dispositions) and writes an image directory.
//
// Everything that cannot be saved yet is refused before anything is
// written, with an *UnsupportedError naming it. On any failure the target
// is put back exactly as it was and detached, and no image directory is
// left behind. After a successful dump the target is killed, unless
// Options.LeaveRunning.
package dump
