package report

import (
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// PeakRSS is this process's peak resident set in bytes, as Boot.PeakRSS
// reports it: VmHWM from /proc/self/status, which counts only this
// process's own memory since exec, falling back to getrusage's maxrss
// (which after exec can still hold the parent's high-water mark).
func PeakRSS() uint64 {
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(l, "VmHWM:"); ok {
				kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
				if err == nil {
					return kb << 10
				}
			}
		}
	}
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) == nil {
		return uint64(ru.Maxrss) << 10
	}
	return 0
}
