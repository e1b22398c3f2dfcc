package tests

import (
	"context"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestLinuxSoak is the harness's stall probe, not a gate test: `make soak`
// runs it (MICROVM_SOAK_N boots, MICROVM_SOAK_PARALLEL at a time,
// MICROVM_SOAK_CPUS vCPUs each) to measure how often an L1 freezes under a
// given L1 configuration (tests/nested/NOTES.md). Each boot is
// `microvm run -- true` with a 60 s watchdog (times the boots at once); every boot's time is logged
// as it ends, so the last line before a freeze names the boot.
func TestLinuxSoak(t *testing.T) {
	n := envInt(t, "MICROVM_SOAK_N", 0)
	if n == 0 {
		t.Skip("MICROVM_SOAK_N is unset: the soak runs only from `make soak`")
	}
	par := envInt(t, "MICROVM_SOAK_PARALLEL", 1)
	cpus := envInt(t, "MICROVM_SOAK_CPUS", 1)
	kernel, initrd := linuxArtifacts(t)
	// 60 s per boot alone; boots at once share L1's one CPU.
	watchdog := time.Duration(par) * 60 * time.Second
	var (
		mu     sync.Mutex
		failed int
		times  []time.Duration
	)
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 1; i <= n; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			ctx, cancel := context.WithTimeout(context.Background(), watchdog)
			defer cancel()
			t0 := time.Now()
			out, err := exec.CommandContext(ctx, microvmBin(t), "run", "--kernel", kernel, "--initrd", initrd,
				"--cpus", strconv.Itoa(cpus), "--memory", "128M", "--", "true").CombinedOutput()
			d := time.Since(t0)
			mu.Lock()
			defer mu.Unlock()
			if err != nil || ctx.Err() != nil {
				failed++
				t.Errorf("soak boot %d/%d: %v after %.1fs (watchdog %v)\n%s", i, n, err, d.Seconds(), watchdog, out)
				return
			}
			times = append(times, d)
			t.Logf("soak boot %d/%d: %.1fs (L1 uptime %s)", i, n, d.Seconds(), firstWord("/proc/uptime"))
		}()
	}
	wg.Wait()
	t.Logf("soak: %d boots, %d at a time, %d vCPU: %d ok, %d failed, in %v; median boot %v",
		n, par, cpus, len(times), failed, time.Since(start).Round(time.Second), median(times).Round(10*time.Millisecond))
}

func firstWord(path string) string {
	b, _ := os.ReadFile(path)
	for i, c := range b {
		if c == ' ' || c == '\n' {
			return string(b[:i])
		}
	}
	return string(b)
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(a, b int) bool { return s[a] < s[b] })
	return s[len(s)/2]
}
