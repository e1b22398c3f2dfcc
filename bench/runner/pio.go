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
	"strings"
	"time"

	"github.com/microvm-dev/microvm"
)

type pioResult struct {
	microvm onOff     // µs per exit, per run
	cloop   []float64 // µs per exit, per run
	errs    []string
}

// onOff is a measurement of microvm with its default sandbox (seccomp
// kill) and with --seccomp off.
type onOff struct{ on, off []float64 }

func (s *onOff) add(mode string, v float64) {
	if mode == "off" {
		s.off = append(s.off, v)
	} else {
		s.on = append(s.on, v)
	}
}

var (
	pioLoopRE  = regexp.MustCompile(`pioloop: (\d+) exits, ([0-9.]+) s, ([0-9.]+) us/exit`)
	pioChildRE = regexp.MustCompile(`pio-child: ([0-9.]+) us/exit`)
)

// runPIO alternates the C loop, microvm with its default sandbox (seccomp
// kill) and microvm with --seccomp off, the two microvm sides in turns,
// each microvm run in a process of its own (pioChild): a sandboxed process
// can start no second guest.
func runPIO(o *options) *pioResult {
	fmt.Printf("\n== exit path: %d port-I/O exits to the no-op register 0x3f4, %d runs each, alternating\n", o.pioCount, o.pioReps)
	res := &pioResult{}
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
		for _, mode := range seccompSides(i) {
			prof := ""
			if i == 1 && mode == "kill" {
				prof = o.pioProfile // one profile is enough: the default's
			}
			us, err := pioRun(o, mode, prof)
			if err != nil {
				res.errs = append(res.errs, "microvm --seccomp "+mode+": "+err.Error())
				progressf("run %d/%d  microvm seccomp %-4s: failed: %v", i, o.pioReps, mode, err)
				continue
			}
			res.microvm.add(mode, us)
			progressf("run %d/%d  microvm seccomp %-4s: %.2f µs/exit", i, o.pioReps, mode, us)
		}
	}
	return res
}

// seccompSides is the order of the two sandbox sides, the default (kill)
// and --seccomp off, in round i: it turns each round, so that neither side
// always runs first.
func seccompSides(i int) []string {
	if i%2 == 0 {
		return []string{"off", "kill"}
	}
	return []string{"kill", "off"}
}

// pioRun runs one pioChild in a fresh process (this binary again).
func pioRun(o *options, mode, profile string) (float64, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(self, "--pio-child", mode, "--pio-guest", o.pioGuest, "--pio-count", strconv.Itoa(o.pioCount),
		"--pio-cpuprofile", profile)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	if m := pioChildRE.FindSubmatch(out.Bytes()); err == nil && m != nil {
		if profile == "-" {
			// Inside L1 there is no way to copy a file out: pass on the
			// child's base64 line.
			for _, l := range strings.Split(out.String(), "\n") {
				if strings.HasPrefix(l, "@@PPROF-BASE64 ") {
					fmt.Println(l)
				}
			}
		}
		return strconv.ParseFloat(string(m[1]), 64)
	}
	return 0, fmt.Errorf("%v: %s", err, lastLine(out.Bytes()))
}

// pioChild is --pio-child MODE: one pio guest through package microvm
// with Seccomp MODE, the code the microvm command runs; it prints the µs
// per exit. A CPU profile (--pio-cpuprofile) is opened before the guest
// starts: the sandbox opens no file.
func pioChild(o *options) int {
	var prof io.Writer
	var buf bytes.Buffer
	switch o.pioProfile {
	case "":
	case "-":
		prof = &buf
	default:
		f, err := os.Create(o.pioProfile)
		if err != nil {
			fatalf(1, "--pio-cpuprofile: %v", err)
		}
		defer f.Close()
		prof = f
	}
	if prof != nil {
		_ = pprof.StartCPUProfile(prof)
		// The profile's writer reads /proc/self/maps as it starts: let it
		// before the sandbox closes the file system.
		time.Sleep(100 * time.Millisecond)
	}
	us, err := pioMicrovm(o.pioGuest, o.pioCount, microvm.SeccompMode(o.pioChild))
	if prof != nil {
		pprof.StopCPUProfile()
	}
	if o.pioProfile == "-" {
		fmt.Printf("@@PPROF-BASE64 %s\n", base64.StdEncoding.EncodeToString(buf.Bytes()))
	}
	if err != nil {
		fmt.Println("pio-child:", err)
		return 1
	}
	fmt.Printf("pio-child: %.3f us/exit\n", us)
	return 0
}

// Debug-port milestones of the pio micro-guest (tests/guests/common.h).
const (
	pioStart = 0x11
	pioEnd   = 0x12
)

// pioMicrovm boots the pio guest in this process through package microvm,
// the code the microvm command runs, and times the exits between its start
// and end milestones: count OUTs to 0x3f4 plus the end milestone's own OUT.
func pioMicrovm(guest string, count int, seccomp microvm.SeccompMode) (float64, error) {
	var t0, t1 time.Time
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	vm, err := microvm.Start(ctx, microvm.Config{
		Kernel:  guest,
		Cmdline: fmt.Sprintf("count=%d", count),
		CPUs:    1,
		Memory:  64 << 20,
		Stdout:  io.Discard,
		Seccomp: seccomp,
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
	fs.StringVar(&o.pioChild, "pio-child", "", "internal: run one pio guest with this --seccomp mode in this process, print µs/exit")
	fs.IntVar(&o.pioCount, "pio-count", 100000, "port-I/O exits per run")
	fs.IntVar(&o.pioReps, "pio-reps", 3, "runs of each side, alternating")
}
