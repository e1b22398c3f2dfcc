//go:build !linux

// Command agent is the microvm guest agent; it only runs on Linux guests.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "agent: only supported on linux")
	os.Exit(1)
}
