package tests

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The snapshot density run of issue 15, not a gate test: `make
// bench-snapshot` runs it in one L1 (MICROVM_SNAP_DENSITY_N restored guests
// at once). Cold against restored timings, with QEMU's restore beside them,
// are `make bench`'s (bench/runner/snapshot.go).

// TestLinuxSnapshotDensity restores N guests (64 MiB each) from one
// snapshot, MICROVM_SNAP_DENSITY_PARALLEL (2) coming up at a time, each
// running a command that waits, and measures what each costs while all N
// are up at once: its proportional set size (PSS,
// /proc/PID/smaps_rollup), where the kernel has it, and in any case the
// drop in MemAvailable divided by N. Restored guests map one memory file
// privately, so the pages none of them writes are shared and split N ways.
// (The nested harness's L1 kernel has no CONFIG_PROC_PAGE_MONITOR, so no
// smaps there: the MemAvailable figure is the one it reports.)
func TestLinuxSnapshotDensity(t *testing.T) {
	n := envInt(t, "MICROVM_SNAP_DENSITY_N", 0)
	if n == 0 {
		t.Skip("MICROVM_SNAP_DENSITY_N is unset: the density run is part of `make bench-snapshot`")
	}
	kernel, initrd := linuxArtifacts(t)
	dir := filepath.Join(t.TempDir(), "snap")
	base := []string{"run", "--kernel", kernel, "--initrd", initrd, "--memory", "64M", "--snapshot", dir}
	if out, err := exec.Command(microvmBin(t), append(base, "--", "true")...).CombinedOutput(); err != nil {
		t.Fatalf("saving run: %v\n%s", err, out)
	}
	// At most par guests are coming up at a time; each later one starts
	// when an earlier one is up. Started all at once, 50 restores on one
	// emulated L1 CPU starved each other: none was up after 16 minutes
	// (README). Density is how many fit in memory at once, not how many
	// can start in the same second.
	par := max(1, envInt(t, "MICROVM_SNAP_DENSITY_PARALLEL", 2))
	availBefore := memAvailable()
	limit := max(10*time.Minute, time.Duration(n)*30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	type guest struct {
		cmd  *exec.Cmd
		up   chan struct{}
		pss  uint64
		code int
		out  strings.Builder
	}
	gs := make([]*guest, n)
	start := time.Now()
	for i := range gs {
		g := &guest{up: make(chan struct{})}
		// The guest says it is up, then waits long enough for the others
		// to come up (par at a time, under 20 s each on a shared emulated
		// CPU) and ends on its own, so that every one can exit 0.
		if i >= par {
			select {
			case <-gs[i-par].up:
			case <-ctx.Done():
				t.Fatalf("guest %d not up after %v", i-par, limit)
			}
		}
		g.cmd = exec.CommandContext(ctx, microvmBin(t), append(base, "--", "sh", "-c", fmt.Sprintf("echo up-%d; sleep %d", i, max(30, 20*(n-i)/par+60)))...)
		stdout, err := g.cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		g.cmd.Stderr = &g.out
		if err := g.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				if strings.HasPrefix(sc.Text(), "up-") {
					close(g.up)
				}
			}
		}()
		gs[i] = g
	}
	for i, g := range gs {
		select {
		case <-g.up:
		case <-ctx.Done():
			t.Fatalf("guest %d not up after %v", i, limit)
		}
	}
	upAll := time.Since(start)
	var total uint64
	var pss []uint64
	for _, g := range gs {
		g.pss = pssOf(g.cmd.Process.Pid)
		total += g.pss
		pss = append(pss, g.pss)
	}
	avail := memAvailable()
	var wg sync.WaitGroup
	for i, g := range gs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.code, _ = exitCode(g.cmd.Wait())
			if g.code != 0 {
				t.Errorf("guest %d: exit %d\n%s", i, g.code, g.out.String())
			}
		}()
	}
	wg.Wait()
	sort.Slice(pss, func(a, b int) bool { return pss[a] < pss[b] })
	mean := float64(total) / float64(n) / (1 << 20)
	t.Logf("snapshot-density: %d restored 64 MiB guests (%d coming up at a time) all up in %v, all exited in %v", n, par, upAll.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	perVM := float64(availBefore-min(avail, availBefore)) / float64(n)
	t.Logf("snapshot-density: MemAvailable %d MiB before, %d MiB with all %d up: %.1f MiB per VM, so about %d more would fit",
		availBefore>>20, avail>>20, n, perVM/(1<<20), int(float64(avail)/max(perVM, 1)))
	if total > 0 {
		t.Logf("snapshot-density: PSS per VM: mean %.1f MiB, min %.1f, median %.1f, max %.1f; total %.0f MiB",
			mean, float64(pss[0])/(1<<20), float64(pss[n/2])/(1<<20), float64(pss[n-1])/(1<<20), float64(total)/(1<<20))
	} else {
		t.Logf("snapshot-density: no PSS: this kernel has no /proc/PID/smaps_rollup")
	}
}

// pssOf is a process's PSS in bytes (smaps_rollup), 0 if unreadable.
func pssOf(pid int) uint64 {
	return procField(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss:")
}

func memAvailable() uint64 { return procField("/proc/meminfo", "MemAvailable:") }

// procField reads a "Name: N kB" line.
func procField(path, name string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == name {
			v, _ := strconv.ParseUint(f[1], 10, 64)
			return v << 10
		}
	}
	return 0
}
