// Package procfs parses the per-process files of /proc that cr reads:
// stat, status and auxv. It only reads; it never talks to the task.
package procfs
