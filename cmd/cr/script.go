package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
)

// actionScripts returns the Notify hook that runs each --action-script at
// CRIU's action points (nil if there is none). Like CRIU
// (criu/action-scripts.c), cr runs each script with sh -c, its stdin
// /dev/null and cr's stdout and stderr, with CRTOOLS_SCRIPT_ACTION (the
// action: pre-dump, post-dump, pre-restore, post-restore, network-lock,
// network-unlock), CRTOOLS_INIT_PID (the root pid of the tree) and
// CRTOOLS_IMAGE_DIR (the image directory, absolute; CRIU gives a
// /proc/PID/fd path to it) in its environment. A script that exits
// non-zero aborts the step; the error names the script and its status.
func actionScripts(scripts []string, dir string) func(action string, pid int) error {
	if len(scripts) == 0 {
		return nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	return func(action string, pid int) error {
		for _, s := range scripts {
			cmd := exec.Command("/bin/sh", "-c", s)
			cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
			cmd.Env = append(os.Environ(),
				"CRTOOLS_SCRIPT_ACTION="+action,
				"CRTOOLS_INIT_PID="+strconv.Itoa(pid),
				"CRTOOLS_IMAGE_DIR="+abs)
			infof("running action script %q (%s)", s, action)
			if err := cmd.Run(); err != nil {
				return fmt.Errorf("action script %q failed: %w", s, err)
			}
		}
		return nil
	}
}
