package report

import (
	"github.com/microvm-dev/microvm/internal/procstat"
	"golang.org/x/sys/unix"
)

// PeakRSS is this process's peak resident set in bytes, as Boot.PeakRSS
// reports it: VmHWM from /proc/self/status, which counts only this
// process's own memory since exec, falling back to getrusage's maxrss
// (which after exec can still hold the parent's high-water mark).
func PeakRSS() uint64 {
	if v, ok := procstat.Bytes("VmHWM"); ok {
		return v
	}
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) == nil {
		return uint64(ru.Maxrss) << 10
	}
	return 0
}
