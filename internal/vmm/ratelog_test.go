package vmm

import (
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestRateLog(t *testing.T) {
	long := strings.Repeat("é", 1000) // 2000 bytes of two-byte runes
	cases := []struct {
		name      string
		perKey    []int // lines logged under keys k0, k1, ...
		arg       string
		printed   int // lines before the summary
		summaries int
	}{
		{"few", []int{3}, "", 3, 0},
		{"exactly the burst", []int{logBurst}, "", logBurst, 0},
		{"flood", []int{20000}, "", logBurst, 1},
		{"two keys", []int{20000, 2}, "", logBurst + 2, 1},
		{"two floods", []int{100, 100}, "", 2 * logBurst, 2},
		{"long lines", []int{100}, long, logBurst, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var lines []string
			l := newRateLog(func(s string) { lines = append(lines, s) }, failOnPanic(t))
			for k, n := range c.perKey {
				for i := 0; i < n; i++ {
					l.logf(fmt.Sprint("k", k), "key %d line %d %s", k, i, c.arg)
				}
			}
			l.close() // lines is the writer's until then
			if len(lines) != c.printed+c.summaries {
				t.Fatalf("%d lines, want %d then %d summaries: %q", len(lines), c.printed, c.summaries, lines)
			}
			for _, s := range lines {
				if len(s) > logLineMax+64 || !utf8.ValidString(s) {
					t.Errorf("line of %d bytes (cap %d) or cut inside a rune: %.80q", len(s), logLineMax, s)
				}
			}
			for _, s := range lines[c.printed:] {
				if !strings.Contains(s, "more lines like") || !strings.Contains(s, fmt.Sprintf("line %d", logBurst)) {
					t.Errorf("summary line %q does not count the suppressed lines or show the first", s)
				}
			}
			if c.perKey[0] == 20000 && !strings.HasPrefix(lines[c.printed], fmt.Sprint(20000-logBurst, " more")) {
				t.Errorf("summary %q: want %d more", lines[c.printed], 20000-logBurst)
			}
		})
	}
}

// TestRateLogStalledSink: a sink that never returns (stderr a pipe nobody
// reads) must not block the logging goroutines or close.
func TestRateLogStalledSink(t *testing.T) {
	stall := make(chan struct{})
	defer close(stall)
	l := newRateLog(func(string) { <-stall }, failOnPanic(t))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for k := 0; k < 2*logQueue; k++ {
			l.logf(fmt.Sprint("k", k), "line %d", k)
		}
		l.close()
	}()
	select {
	case <-done:
	case <-time.After(logFlushWait + 5*time.Second):
		t.Fatal("logf or close waited on a stalled sink")
	}
	if l.dropped == 0 {
		t.Error("no lines counted as dropped")
	}
}
