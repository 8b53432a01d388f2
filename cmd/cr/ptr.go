package main

import "unsafe"

func ptrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }
