package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/microvm-dev/microvm/tests/nested/l1proto"
)

// heartbeat prints one line per period until stop is closed (the host side,
// tests/nested, treats a run whose heartbeats stop as a stalled L1 and
// prints the last ones as its diagnosis):
//
//	@@L1-HB t=40.1 load=1.95 ctxt=+5123 intr=+2511 run=2 vms=3 [412:R:3.2s 415:S:1.1s ...]
//
// t is L1's uptime, ctxt and intr are the context switches and interrupts
// since the last line (/proc/stat), run is procs_running, and each
// microvm process (an L2 guest) shows pid, state and CPU time used so far:
// a guest whose CPU time stops growing is stuck, one that grows while L1's
// heartbeat goes on is merely slow. One write per line, so it never
// splits a line of the payload's.
func heartbeat(period time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(period)
	defer t.Stop()
	var lastCtxt, lastIntr uint64
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		ctxt, intr, running := procStat()
		line := fmt.Sprintf("%s t=%s load=%s ctxt=+%d intr=+%d run=%d %s\n", l1proto.Heartbeat,
			uptime(), loadavg(), ctxt-lastCtxt, intr-lastIntr, running, guests())
		lastCtxt, lastIntr = ctxt, intr
		os.Stdout.WriteString(line)
	}
}

func firstField(path string) string {
	b, _ := os.ReadFile(path)
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

func uptime() string  { return firstField("/proc/uptime") }
func loadavg() string { return firstField("/proc/loadavg") }

func procStat() (ctxt, intr uint64, running int) {
	b, _ := os.ReadFile("/proc/stat")
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "ctxt":
			ctxt, _ = strconv.ParseUint(f[1], 10, 64)
		case "intr":
			intr, _ = strconv.ParseUint(f[1], 10, 64)
		case "procs_running":
			running, _ = strconv.Atoi(f[1])
		}
	}
	return
}

// clockTicks is USER_HZ, 100 on x86 Linux (/proc/PID/stat's unit).
const clockTicks = 100

// guests lists the running microvm processes as "vms=N [pid:state:cpu ...]".
func guests() string {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var parts []string
	for _, d := range dirs {
		b, err := os.ReadFile(d + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ... utime(14) stime(15); comm may hold spaces.
		open, close := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
		if open < 0 || close < open || string(b[open+1:close]) != "microvm" {
			continue
		}
		f := strings.Fields(string(b[close+1:]))
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseUint(f[11], 10, 64)
		st, _ := strconv.ParseUint(f[12], 10, 64)
		parts = append(parts, fmt.Sprintf("%s:%s:%.1fs", filepath.Base(d), f[0], float64(ut+st)/clockTicks))
	}
	return fmt.Sprintf("vms=%d [%s]", len(parts), strings.Join(parts, " "))
}
