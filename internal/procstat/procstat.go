// Package procstat reads this process's memory figures from
// /proc/self/status (proc(5)), for the RSS numbers microvm reports.
package procstat

import (
	"os"
	"strconv"
	"strings"
)

// Bytes returns the "kB" field name (VmRSS, VmHWM, ...) of
// /proc/self/status in bytes.
func Bytes(name string) (uint64, bool) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	return parse(string(b), name)
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
