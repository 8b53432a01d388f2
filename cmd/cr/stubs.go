package main

import "errors"

func cmdCheck(args []string) error { return errors.New("check: not implemented yet") }
func cmdDemo(args []string) error  { return errors.New("demo: not implemented yet") }
