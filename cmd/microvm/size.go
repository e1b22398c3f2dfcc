package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/microvm-dev/microvm/internal/vmm/layout"
)

// parseSize parses a memory size: a number with an optional K, M, G or T
// suffix (binary units; "MiB"/"MB" also accepted). A bare number is MiB.
func parseSize(s string) (uint64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	mult := uint64(layout.MiB)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'K':
			mult, t = layout.KiB, t[:n-1]
		case 'M':
			mult, t = layout.MiB, t[:n-1]
		case 'G':
			mult, t = layout.GiB, t[:n-1]
		case 'T':
			mult, t = 1024*layout.GiB, t[:n-1]
		}
	}
	v, err := strconv.ParseUint(t, 10, 64)
	if err != nil || t == "" {
		return 0, fmt.Errorf("%q is not a size (use e.g. 512M or 6G)", s)
	}
	if v > (1<<64-1)/mult {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return v * mult, nil
}
