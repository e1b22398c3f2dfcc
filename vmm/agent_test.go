package vmm

import (
	"bytes"
	"runtime"
	"testing"
	"time"

	"github.com/microvm-dev/microvm/devices/virtio"
	"github.com/microvm-dev/microvm/initrd/agentproto"
)

// TestAgentReadyFlood is defects 4 and 5 of issue 11: a guest that repeats
// "ready" without reading, or sends junk, gets one reply, no goroutine per
// message, and a bounded number of log lines.
func TestAgentReadyFlood(t *testing.T) {
	var lines []string
	m := &Machine{cfg: Config{Command: []string{"true"}}}
	m.log = newRateLog(func(s string) { lines = append(lines, s) })
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
	if len(lines) > logBurst {
		t.Errorf("%d log lines for 20000 junk messages", len(lines))
	}
	m.reportDropped()
	m.log.summary()
	if len(lines) != logBurst+2 {
		t.Errorf("after the summary: %q", lines)
	}
}
