package main

// `microvm bench`, and exec to the first KVM_RUN of the smallest guest.

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/microvm-dev/microvm"
	"github.com/microvm-dev/microvm/internal/report"
)

// benchResult is `microvm bench --json`, or why there is none.
type benchResult struct {
	report.BenchSummary
	err string
}

func runMicrovmBench(o *options) *benchResult {
	fmt.Printf("\n== microvm bench --runs %d (boot timeline, VMM memory overhead)\n", o.benchRuns)
	args := []string{"bench", "--runs", strconv.Itoa(o.benchRuns), "--json",
		"--kernel", o.kernel, "--initrd", o.initrd, "--memory", fmt.Sprintf("%dM", o.memoryMiB),
		"--timeout", o.bootTimeout.String()}
	cmd := exec.Command(o.microvm, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = os.Stdout // its progress lines
	err := cmd.Run()
	var b benchResult
	if err != nil {
		b.err = err.Error()
	} else if jerr := json.Unmarshal(out.Bytes(), &b.BenchSummary); jerr != nil {
		b.err = fmt.Sprintf("bad JSON %q: %v", out.String(), jerr)
	}
	if b.err != "" {
		progressf("microvm bench failed: %s", b.err)
	}
	return &b
}

// exec to the first KVM_RUN with the smallest guest (the pio micro-guest,
// 1 exit, no initrd): the VMM's own fixed start-up cost.
func runFirstRun(o *options) []float64 {
	fmt.Printf("\n== exec to first KVM_RUN: microvm boot of the pio micro-guest (no initrd), %d runs\n", o.benchRuns)
	var v []float64
	for i := 1; i <= o.benchRuns; i++ {
		ms, err := execTo(o, microvm.PhaseFirstRun, "boot", "--kernel", o.pioGuest, "--cmdline", "count=1", "--json", "--timeout", "1m")
		if err != nil {
			progressf("run %d: failed: %v", i, err)
			continue
		}
		v = append(v, ms)
		progressf("run %d/%d: first KVM_RUN %.1f ms after exec", i, o.benchRuns, ms)
	}
	return v
}

// runSandboxInit boots the Linux guest to init with the default sandbox
// and with --seccomp off (ms from exec), alternating (the order turns each round), so
// that both see the same load.
func runSandboxInit(o *options) *onOff {
	fmt.Printf("\n== exec to init, sandbox (seccomp kill) against --seccomp off, %d runs each, alternating\n", o.benchRuns)
	r := &onOff{}
	for i := 1; i <= o.benchRuns; i++ {
		for _, mode := range seccompSides(i) {
			ms, err := execTo(o, microvm.PhaseInit, "run", "--json", "--seccomp", mode, "--kernel", o.kernel, "--initrd", o.initrd,
				"--memory", fmt.Sprintf("%dM", o.memoryMiB), "--timeout", o.bootTimeout.String(), "--", "true")
			if err != nil {
				progressf("run %d/%d seccomp %-4s: failed: %v", i, o.benchRuns, mode, err)
				continue
			}
			r.add(mode, ms)
			progressf("run %d/%d seccomp %-4s: init %.0f ms after exec", i, o.benchRuns, mode, ms)
		}
	}
	return r
}

// execTo runs microvm with args (which include --json) and returns the ms
// from exec to phase: the parent's exec time to the child's timeline zero,
// plus the phase's place on the timeline.
func execTo(o *options, phase microvm.Phase, args ...string) (float64, error) {
	cmd := exec.Command(o.microvm, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	t0 := time.Now()
	err := cmd.Run()
	var rep report.Boot
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	if jerr := json.Unmarshal([]byte(lines[len(lines)-1]), &rep); err != nil || jerr != nil {
		return 0, fmt.Errorf("%v %v: %s", err, jerr, lastLine(stderr.Bytes()))
	}
	at, ok := rep.Timeline.MS(phase)
	if !ok {
		return 0, fmt.Errorf("no %s in the timeline", phase)
	}
	return float64(time.Unix(0, rep.StartUnixNS).Sub(t0).Microseconds())/1e3 + at, nil
}

// benchFlags registers how many boots `microvm bench` and the first-run
// measurement make.
func (o *options) benchFlags(fs *flag.FlagSet) {
	fs.IntVar(&o.benchRuns, "bench-runs", 3, "microvm bench --runs (0 skips it)")
}
