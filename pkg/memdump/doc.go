// Package memdump reads a process's address space: its VMAs from
// /proc/PID/smaps, which pages hold data worth saving (the PAGEMAP_SCAN
// ioctl on /proc/PID/pagemap), and the pages themselves, in large batches,
// into an image pages file.
//
// Saved pages are the present or swapped pages of private mappings that
// are anonymous (including copy-on-write copies inside private file
// mappings). Pages never touched, pages mapping the shared zero page and
// unmodified file pages are not saved: on restore they read back from zero
// or from the file. MAP_SHARED file mappings are not copied; the file holds
// their data.
package memdump
