//go:build !amd64

package nested

// measureTSCkHz returns 0 (unknown) where the host is not x86-64.
func measureTSCkHz() int { return 0 }
