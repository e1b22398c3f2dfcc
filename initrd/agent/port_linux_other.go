//go:build linux && !amd64

package main

import (
	"errors"
	"runtime"
)

// No port I/O instructions on this architecture; portio_linux.go falls back
// to /dev/port (1-byte writes only).

func outb(port uint16, val uint8) {}

func outl(port uint16, val uint32) {}

func withIoperm(port uint16, n int, fn func()) error {
	return errors.New("no port I/O instructions on " + runtime.GOARCH)
}
