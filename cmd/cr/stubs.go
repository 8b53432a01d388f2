package main

import "errors"

func cmdRestore(args []string) (int, bool, error) {
	return 0, false, errors.New("restore: not implemented yet")
}
func cmdCheck(args []string) error { return errors.New("check: not implemented yet") }
func cmdDemo(args []string) error  { return errors.New("demo: not implemented yet") }
