package vmm

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/microvm-dev/microvm/devices/virtio"
	"github.com/microvm-dev/microvm/agentproto"
)

// TestAgentReadyFlood is defects 4 and 5 of issue 11: a guest that repeats
// "ready" without reading, or sends junk, gets one reply, no goroutine per
// message, and a bounded number of log lines.
func TestAgentReadyFlood(t *testing.T) {
	var lines []string
	m := &Machine{cfg: Config{Command: []string{"true"}}}
	m.log = newRateLog(func(s string) { lines = append(lines, s) }, failOnPanic(t))
	ch := virtio.NewChannels(AgentPortName)
	defer ch.Close()
	a := &agentConn{m: m, port: ch.Ports[0]}
	m.agent = a
	before := runtime.NumGoroutine()
	ready := agentproto.EncodeMsg(agentproto.Msg{T: agentproto.MsgReady})
	const n = 100000
	a.Write(bytes.Repeat(ready, n))
	reply := agentproto.EncodeMsg(agentproto.Msg{T: agentproto.MsgCmd, Argv: m.cfg.Command})
	deadline := time.Now().Add(5 * time.Second)
	for ch.Ports[0].Unread() != len(reply) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if u := ch.Ports[0].Unread(); u != len(reply) {
		t.Errorf("%d bytes wait for the guest, want one reply of %d", u, len(reply))
	}
	if g := runtime.NumGoroutine() - before; g > 1 {
		t.Errorf("%d goroutines more after %d ready messages", g, n)
	}
	if d := a.dropped.Load(); d != n-1 {
		t.Errorf("%d ready messages counted as coalesced, want %d", d, n-1)
	}
	a.Write(bytes.Repeat([]byte("junk\n"), 20000))
	m.reportDropped()
	m.log.close()
	if len(lines) != logBurst+2 {
		t.Errorf("after the summary: %q", lines)
	}
}

// TestAgentHugeLines: near-MaxMsgLen messages of an unknown type must not be
// quoted whole into the log (issue 11b: 1000 of them made 4.2 MiB of stderr).
func TestAgentHugeLines(t *testing.T) {
	var lines []string
	m := &Machine{}
	m.log = newRateLog(func(s string) { lines = append(lines, s) }, failOnPanic(t))
	a := &agentConn{m: m}
	huge := []byte(`{"t":"` + strings.Repeat("a", agentproto.MaxMsgLen-16) + `"}` + "\n")
	const n = 20
	for i := 0; i < n; i++ {
		a.Write(huge)
	}
	m.log.close()
	total := 0
	for _, l := range lines {
		total += len(l)
		if len(l) > logLineMax+64 {
			t.Errorf("log line of %d bytes: %.80q...", len(l), l)
		}
	}
	if len(lines) != logBurst+1 || total > (logBurst+1)*(logLineMax+64) {
		t.Errorf("%d lines, %d bytes for %d messages of %d bytes", len(lines), total, n, len(huge))
	}
}
