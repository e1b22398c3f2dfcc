package vmm

import (
	"fmt"
	"strings"
	"testing"
)

func TestRateLog(t *testing.T) {
	cases := []struct {
		name      string
		perKey    []int // lines logged under keys k0, k1, ...
		printed   int   // lines before the summary
		summaries int
	}{
		{"few", []int{3}, 3, 0},
		{"exactly the burst", []int{logBurst}, logBurst, 0},
		{"flood", []int{20000}, logBurst, 1},
		{"two keys", []int{20000, 2}, logBurst + 2, 1},
		{"two floods", []int{100, 100}, 2 * logBurst, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var lines []string
			l := newRateLog(func(s string) { lines = append(lines, s) })
			for k, n := range c.perKey {
				for i := 0; i < n; i++ {
					l.logf(fmt.Sprint("k", k), "key %d line %d", k, i)
				}
			}
			if len(lines) != c.printed {
				t.Fatalf("%d lines printed, want %d", len(lines), c.printed)
			}
			l.summary()
			sum := lines[c.printed:]
			if len(sum) != c.summaries {
				t.Fatalf("summary %q, want %d lines", sum, c.summaries)
			}
			for _, s := range sum {
				if !strings.Contains(s, "more lines like") || !strings.Contains(s, fmt.Sprintf("line %d", logBurst)) {
					t.Errorf("summary line %q does not count the suppressed lines or show the first", s)
				}
			}
			if c.perKey[0] == 20000 && !strings.HasPrefix(sum[0], fmt.Sprint(20000-logBurst, " more")) {
				t.Errorf("summary %q: want %d more", sum[0], 20000-logBurst)
			}
		})
	}
}
