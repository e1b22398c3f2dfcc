package tests

import (
	"context"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// densityGateN is the gate's N: small enough that its L1 never stalls
// (tests/nested/NOTES.md has the measurements); scale is for
// `make bench-density` (N=50).
const densityGateN = 4

// TestLinuxDensity starts N concurrent 64 MiB Linux guests (densityGateN, or
// $MICROVM_DENSITY_N). Each runs a command
// through `microvm run` and exits; every one must exit 0. It reports the
// host RSS of each microvm process (its peak, from rusage), which includes
// the guest RAM the guest touched.
func TestLinuxDensity(t *testing.T) {
	kernel, initrd := linuxArtifacts(t)
	n := envInt(t, "MICROVM_DENSITY_N", densityGateN)
	type outcome struct {
		code    int
		maxRSS  int64 // KiB
		elapsed time.Duration
		out     string
		err     error
	}
	// A hang guard, not a speed check: under the nested harness all guests
	// share one emulated CPU, and on a busy host that CPU may get a third
	// of a core (20 guests then took 7.5 min).
	limit := max(15*time.Minute, time.Duration(n)*40*time.Second)
	res := make([]outcome, n)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), limit)
			defer cancel()
			cmd := exec.CommandContext(ctx, microvmBin(t), "run", "--kernel", kernel, "--initrd", initrd,
				"--memory", "64M", "--timeout", (limit - time.Minute).String(), "--json", "--", "sh", "-c", fmt.Sprintf("echo guest-%d", i))
			t0 := time.Now()
			out, err := cmd.CombinedOutput()
			o := outcome{elapsed: time.Since(t0), out: string(out)}
			o.code, o.err = exitCode(err)
			if cmd.ProcessState != nil {
				if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
					o.maxRSS = ru.Maxrss
				}
			}
			res[i] = o
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	var rss []int64
	var sum int64
	var slowest time.Duration
	for i, o := range res {
		if o.err != nil || o.code != 0 || !hasLine(o.out, fmt.Sprintf("guest-%d", i)) {
			t.Errorf("guest %d: exit %d, err %v, output:\n%s", i, o.code, o.err, o.out)
		}
		rss = append(rss, o.maxRSS)
		sum += o.maxRSS
		slowest = max(slowest, o.elapsed)
	}
	sort.Slice(rss, func(a, b int) bool { return rss[a] < rss[b] })
	t.Logf("density: %d concurrent 64 MiB Linux guests, all done in %v (slowest %v)", n, wall.Round(time.Millisecond), slowest.Round(time.Millisecond))
	t.Logf("density: host peak RSS per VM: mean %.1f MiB, min %.1f MiB, median %.1f MiB, max %.1f MiB; total %.0f MiB",
		float64(sum)/float64(n)/1024, float64(rss[0])/1024, float64(rss[n/2])/1024, float64(rss[n-1])/1024, float64(sum)/1024)
}

// hasLine reports whether out has the line want (the guest's tty ends lines
// in \r\n).
func hasLine(out, want string) bool {
	for _, l := range strings.Split(out, "\n") {
		if strings.TrimRight(l, "\r") == want {
			return true
		}
	}
	return false
}
