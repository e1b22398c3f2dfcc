package main

// The exit path: the pio micro-guest's port-I/O exits, timed inside microvm
// and in bench/pioloop.c.

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"runtime/pprof"
	"strconv"
	"time"

	"github.com/microvm-dev/microvm"
)

type pioResult struct {
	microvm, cloop []float64 // µs per exit, per run
	errs           []string
}

var pioLoopRE = regexp.MustCompile(`pioloop: (\d+) exits, ([0-9.]+) s, ([0-9.]+) us/exit`)

func runPIO(o *options) *pioResult {
	fmt.Printf("\n== exit path: %d port-I/O exits to the no-op register 0x3f4, %d runs each, alternating\n", o.pioCount, o.pioReps)
	res := &pioResult{}
	var prof io.Writer
	if o.pioProfile == "-" {
		// Inside L1 there is no way to copy a file out: print it.
		var buf bytes.Buffer
		prof = &buf
		defer func() {
			fmt.Printf("@@PPROF-BASE64 %s\n", base64.StdEncoding.EncodeToString(buf.Bytes()))
		}()
	} else if o.pioProfile != "" {
		f, err := os.Create(o.pioProfile)
		if err != nil {
			fatalf(1, "--pio-cpuprofile: %v", err)
		}
		prof = f
		defer f.Close()
	}
	for i := 1; i <= o.pioReps; i++ {
		out, err := exec.Command(o.pioLoop, strconv.Itoa(o.pioCount)).CombinedOutput()
		if m := pioLoopRE.FindSubmatch(out); err == nil && m != nil {
			us, _ := strconv.ParseFloat(string(m[3]), 64)
			res.cloop = append(res.cloop, us)
			progressf("run %d/%d  C loop  : %.2f µs/exit", i, o.pioReps, us)
		} else {
			res.errs = append(res.errs, fmt.Sprintf("C loop: %v: %s", err, bytes.TrimSpace(out)))
			progressf("run %d/%d  C loop  : failed: %v: %s", i, o.pioReps, err, bytes.TrimSpace(out))
		}
		if prof != nil {
			_ = pprof.StartCPUProfile(prof)
		}
		us, err := pioMicrovm(o.pioGuest, o.pioCount)
		if prof != nil {
			pprof.StopCPUProfile()
			prof = nil // one profile is enough
		}
		if err != nil {
			res.errs = append(res.errs, "microvm: "+err.Error())
			progressf("run %d/%d  microvm : failed: %v", i, o.pioReps, err)
			continue
		}
		res.microvm = append(res.microvm, us)
		progressf("run %d/%d  microvm : %.2f µs/exit", i, o.pioReps, us)
	}
	return res
}

// Debug-port milestones of the pio micro-guest (tests/guests/common.h).
const (
	pioStart = 0x11
	pioEnd   = 0x12
)

// pioMicrovm boots the pio guest in this process through package microvm,
// the code the microvm command runs, and times the exits between its start
// and end milestones: count OUTs to 0x3f4 plus the end milestone's own OUT.
func pioMicrovm(guest string, count int) (float64, error) {
	var t0, t1 time.Time
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	vm, err := microvm.Start(ctx, microvm.Config{
		Kernel:  guest,
		Cmdline: fmt.Sprintf("count=%d", count),
		CPUs:    1,
		Memory:  64 << 20,
		Stdout:  io.Discard,
		OnMilestone: func(code uint8, _ uint32) {
			switch code {
			case pioStart:
				t0 = time.Now()
			case pioEnd:
				t1 = time.Now()
			}
		},
	})
	if err != nil {
		return 0, err
	}
	res, err := vm.Wait()
	if res.Reason != microvm.ExitReset {
		return 0, fmt.Errorf("guest ended with %s %s %v", res.Reason, res.Detail, err)
	}
	if t0.IsZero() || t1.IsZero() {
		return 0, errors.New("guest did not write its start and end milestones")
	}
	return float64(t1.Sub(t0).Nanoseconds()) / 1e3 / float64(count+1), nil
}

// pioFlags registers the exit path's flags.
func (o *options) pioFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.pioGuest, "pio-guest", "", "pio micro-guest ELF (tests/guests/pio.elf); empty skips the exit-path benchmark")
	fs.StringVar(&o.pioLoop, "pioloop", "", "the C baseline built from bench/pioloop.c")
	fs.StringVar(&o.pioProfile, "pio-cpuprofile", "", "write a CPU profile of microvm's first PIO run here (\"-\": base64 on stdout)")
	fs.IntVar(&o.pioCount, "pio-count", 100000, "port-I/O exits per run")
	fs.IntVar(&o.pioReps, "pio-reps", 3, "runs of each side, alternating")
}
