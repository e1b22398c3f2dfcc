package nested

import (
	"bytes"
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"
)

// monitorCmd sends one command to QEMU's human monitor on the Unix socket
// path and returns what QEMU printed before its next "(qemu)" prompt.
func monitorCmd(path, cmd string, timeout time.Duration) (string, error) {
	c, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	// The banner ends with the first prompt; the reply with the second.
	var buf bytes.Buffer
	readPrompt := func() error {
		b := make([]byte, 4096)
		for !bytes.HasSuffix(bytes.TrimRight(buf.Bytes(), " "), []byte("(qemu)")) {
			n, err := c.Read(b)
			buf.Write(b[:n])
			if err != nil {
				return err
			}
		}
		return nil
	}
	if err := readPrompt(); err != nil {
		return "", fmt.Errorf("monitor banner: %w", err)
	}
	buf.Reset()
	if _, err := c.Write([]byte(cmd + "\n")); err != nil {
		return "", err
	}
	if err := readPrompt(); err != nil {
		return buf.String(), fmt.Errorf("monitor %q: %w", cmd, err)
	}
	out := strings.ReplaceAll(buf.String(), "\r", "")
	out = strings.TrimSuffix(strings.TrimRight(out, " "), "(qemu)")
	// QEMU echoes the command line first (with terminal escapes).
	if i := strings.IndexByte(out, '\n'); i >= 0 && strings.Contains(out[:i], strings.Fields(cmd)[0]) {
		out = out[i+1:]
	}
	return out, nil
}

var ripRE = regexp.MustCompile(`RIP=([0-9a-f]+)`)
var cplRE = regexp.MustCompile(`CPL=([0-9])`)
var gsRE = regexp.MustCompile(`(?m)^GS\s*=\S+\s+([0-9a-f]+)`)

// cpuState summarises "info registers" as one line per CPU:
// "RIP=... CPL=... GS.base=...". GS.base tells an L1 kernel address from
// an L2 guest's (tests/nested/NOTES.md).
func cpuState(regs string) string {
	var parts []string
	for _, blk := range strings.Split(regs, "CPU#") {
		rip := ripRE.FindStringSubmatch(blk)
		if rip == nil {
			continue
		}
		s := "RIP=" + rip[1]
		if m := cplRE.FindStringSubmatch(blk); m != nil {
			s += " CPL=" + m[1]
		}
		if m := gsRE.FindStringSubmatch(blk); m != nil {
			s += " GS.base=" + m[1]
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

// stallReason describes a stalled L1: how long it was silent, its last
// heartbeat, and where its CPUs are, sampled twice through the monitor to
// tell a CPU stuck on one instruction loop from one that still moves.
func stallReason(cfg *Config, quiet time.Duration, last string) string {
	r := fmt.Sprintf("L1 stalled: no heartbeat for %.0fs", quiet.Seconds())
	if last != "" {
		r += " (last: " + last + ")"
	}
	var samples []string
	for i := 0; i < 2; i++ {
		if i > 0 {
			time.Sleep(time.Second)
		}
		regs, err := monitorCmd(cfg.Monitor, "info registers -a", 5*time.Second)
		if err != nil {
			samples = append(samples, "monitor: "+err.Error())
			break
		}
		samples = append(samples, cpuState(regs))
	}
	r += "; L1 CPU state: " + strings.Join(samples, " | then ")
	// The local APIC: a timer that is armed or expired, and vectors
	// pending (IRR) or in service (ISR), tell a lost interrupt from none.
	if lapic, err := monitorCmd(cfg.Monitor, "info lapic", 5*time.Second); err == nil {
		r += "; L1 LAPIC: " + strings.Join(strings.Fields(lapic), " ")
	}
	return r
}
