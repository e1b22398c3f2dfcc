// Package procstat reads this process's memory figures from
// /proc/self/status (proc(5)), for the RSS numbers microvm reports.
package procstat

import (
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
)

var (
	keepOnce sync.Once
	kept     *os.File
)

// Keep opens /proc/self/status now and keeps it open, so that Bytes works
// once the process may no longer open files (a sandboxed microvm reads
// its RSS at exit, after its seccomp filter and jail are on). A proc
// status file regenerates its text on every read from offset 0.
func Keep() {
	keepOnce.Do(func() { kept, _ = os.Open("/proc/self/status") })
}

// Bytes returns the "kB" field name (VmRSS, VmHWM, ...) of
// /proc/self/status in bytes.
func Bytes(name string) (uint64, bool) {
	b, err := read()
	if err != nil {
		return 0, false
	}
	return parse(string(b), name)
}

func read() ([]byte, error) {
	if kept == nil {
		return os.ReadFile("/proc/self/status")
	}
	var b []byte
	buf := make([]byte, 4096)
	for {
		n, err := kept.ReadAt(buf, int64(len(b)))
		b = append(b, buf[:n]...)
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

func parse(status, name string) (uint64, bool) {
	for _, l := range strings.Split(status, "\n") {
		if rest, ok := strings.CutPrefix(l, name+":"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10, err == nil
		}
	}
	return 0, false
}
