package agent

import (
	"bytes"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microvm-dev/microvm/agentproto"
	"github.com/microvm-dev/microvm/devices/virtio"
	"github.com/microvm-dev/microvm/internal/guard"
)

// logRecorder collects formatted log lines from several goroutines.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (r *logRecorder) logf(format string, a ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, format)
}

func (r *logRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.lines)
}

func noFatal(t *testing.T) func(error) {
	return func(err error) { t.Errorf("guarded goroutine: %v", err) }
}

// TestReadyFlood is defects 4 and 5 of issue 11: a guest that repeats
// "ready" without reading gets one reply and no goroutine per message, and
// the coalesced ones are reported once, at Close.
func TestReadyFlood(t *testing.T) {
	var log logRecorder
	ch := virtio.NewChannels(agentproto.ChannelName)
	defer ch.Close()
	cmd := []string{"true"}
	a := NewConn(agentproto.Job{Argv: cmd}, ch.Ports[0], func(uint8, uint32) {}, log.logf, noFatal(t))
	before := runtime.NumGoroutine()
	const n = 100000
	a.Write(bytes.Repeat(agentproto.EncodeMsg(agentproto.Msg{T: agentproto.MsgReady}), n))
	// The reply carries a seed and the host's clock (same length today).
	reply := agentproto.EncodeMsg(agentproto.Msg{T: agentproto.MsgCmd, Argv: cmd, Seed: make([]byte, seedLen), TimeNS: time.Now().UnixNano()})
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
	a.Close()
	a.Close()
	if got := log.count(); got != 1 {
		t.Errorf("%d log lines after Close twice, want the one summary: %q", got, log.lines)
	}
}

// TestMessages: milestones and the exit status reach the machine, junk and
// oversized messages are logged, never acted on.
func TestMessages(t *testing.T) {
	type ms struct {
		code  uint8
		value uint32
	}
	tests := []struct {
		name  string
		in    []byte
		want  []ms
		warns int
	}{
		{"milestone", agentproto.EncodeMsg(agentproto.Msg{T: agentproto.MsgMilestone, Code: agentproto.MilestoneReady}), []ms{{agentproto.MilestoneReady, 0}}, 0},
		{"exit status", agentproto.EncodeMsg(agentproto.Msg{T: agentproto.MsgExit, Status: 42}), []ms{{agentproto.MilestoneCmdDone, 42}}, 0},
		{"split across writes", agentproto.EncodeMsg(agentproto.Msg{T: agentproto.MsgExit, Status: 7}), []ms{{agentproto.MilestoneCmdDone, 7}}, 0},
		{"junk", []byte("junk\n{\"t\":\"nope\"}\n"), nil, 2},
		{"oversized", append(bytes.Repeat([]byte("a"), agentproto.MaxMsgLen+10), '\n'), nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []ms
			var log logRecorder
			a := NewConn(agentproto.Job{}, nil, func(c uint8, v uint32) { got = append(got, ms{c, v}) }, log.logf, noFatal(t))
			if tt.name == "split across writes" {
				for i := range tt.in {
					a.Write(tt.in[i : i+1])
				}
			} else {
				a.Write(tt.in)
			}
			if len(got) != len(tt.want) || (len(got) > 0 && got[0] != tt.want[0]) {
				t.Errorf("milestones %v, want %v", got, tt.want)
			}
			if log.count() != tt.warns {
				t.Errorf("%d warnings, want %d: %q", log.count(), tt.warns, log.lines)
			}
		})
	}
}

type panicPort struct{}

func (panicPort) Write([]byte) (int, error) { panic("boom") }
func (panicPort) Unread() int               { return 0 }

// TestReplyPanic: a panic on the reply goroutine reaches fatal as an
// internal error naming it, instead of killing the process.
func TestReplyPanic(t *testing.T) {
	errs := make(chan error, 1)
	a := NewConn(agentproto.Job{Argv: []string{"true"}}, panicPort{}, func(uint8, uint32) {}, func(string, ...any) {}, func(err error) { errs <- err })
	a.Write(agentproto.EncodeMsg(agentproto.Msg{T: agentproto.MsgReady}))
	select {
	case err := <-errs:
		if !strings.HasPrefix(err.Error(), "internal error: agent reply: panic: ") || guard.Of(err) == nil {
			t.Fatalf("fatal got %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the panic did not reach fatal")
	}
}

func TestGate(t *testing.T) {
	var out bytes.Buffer
	g := NewGate(&out)
	g.Write([]byte("boot log\n"))
	g.Milestone(agentproto.MilestoneInit)
	g.Write([]byte("banner\n"))
	if out.Len() != 0 || string(g.Held()) != "boot log\nbanner\n" {
		t.Fatalf("before ready: out %q held %q", out.String(), g.Held())
	}
	g.Milestone(agentproto.MilestoneReady)
	g.Write([]byte("output\n"))
	g.Milestone(agentproto.MilestoneCmdDone)
	g.Write([]byte("poweroff log\n"))
	g.Milestone(agentproto.MilestoneReady) // a late "ready" does not reopen it
	g.Write([]byte("more\n"))
	if out.String() != "output\n" || g.Held() != nil {
		t.Fatalf("out %q held %q", out.String(), g.Held())
	}
	big := NewGate(&out)
	big.Write(bytes.Repeat([]byte("x"), 3*holdMax))
	if len(big.Held()) != holdMax {
		t.Errorf("held %d bytes, want the last %d", len(big.Held()), holdMax)
	}
}

func TestParams(t *testing.T) {
	if got := Params(agentproto.Job{Argv: []string{"echo", "hi"}}, true); got != "microvm.chan=1" {
		t.Errorf("channel: %q", got)
	}
	got := Params(agentproto.Job{Argv: []string{"echo", "hi there"}}, false)
	enc, ok := strings.CutPrefix(got, agentproto.CmdParam+"=")
	if !ok {
		t.Fatalf("cmdline: %q", got)
	}
	if argv, err := agentproto.DecodeCmd(enc); err != nil || len(argv) != 2 || argv[1] != "hi there" {
		t.Errorf("decoded %q, %v", argv, err)
	}
	// With shares the job is an object, on the same parameter.
	job := agentproto.Job{Argv: []string{"ls"}, Mounts: []agentproto.Mount{{Tag: "microvm0", Path: "/src", RO: true}}, Dir: "/src"}
	enc, _ = strings.CutPrefix(Params(job, false), agentproto.CmdParam+"=")
	if got, err := agentproto.DecodeJob(enc); err != nil || got.Dir != "/src" || len(got.Mounts) != 1 || !got.Mounts[0].RO {
		t.Errorf("decoded %+v, %v", got, err)
	}
}

func TestFindUname(t *testing.T) {
	u := agentproto.Uname{Sysname: "Linux", Release: "6.12.117-microvm", Machine: "x86_64"}
	out := "boot noise\n" + agentproto.FormatUnameLine(u) + "\nreboot: Power down\n"
	got, ok := FindUname(out)
	if !ok || got != u {
		t.Fatalf("FindUname = %+v, %v", got, ok)
	}
	if _, ok := FindUname("no agent here\n"); ok {
		t.Error("found a uname in output without one")
	}
}

func TestCaptureBounded(t *testing.T) {
	var c Capture
	chunk := bytes.Repeat([]byte("y"), 1<<20)
	for i := 0; i < 6; i++ {
		if n, err := c.Write(chunk); n != len(chunk) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if got := len(c.String()); got != captureMax {
		t.Errorf("kept %d bytes, want %d", got, captureMax)
	}
}

// bufPort is a Port that keeps what the host wrote.
type bufPort struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (p *bufPort) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.buf.Write(b)
}

func (p *bufPort) Unread() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.buf.Len()
}

// TestReplyFresh: every reply carries the whole job, its own seed and the
// host's clock, taken after BeforeReply (a snapshot at agent ready) ran; a
// connection told the agent is Waiting replies without a "ready".
func TestReplyFresh(t *testing.T) {
	var seeds [][]byte
	for range 2 {
		p := &bufPort{}
		job := agentproto.Job{Argv: []string{"true"}, Mounts: []agentproto.Mount{{Tag: "s0", Path: "/mnt"}}, Dir: "/mnt"}
		a := NewConn(job, p, func(uint8, uint32) {}, func(string, ...any) {}, noFatal(t))
		var before time.Time
		a.BeforeReply(func() { before = time.Now() })
		a.Waiting()
		deadline := time.Now().Add(5 * time.Second)
		for p.Unread() == 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		p.mu.Lock()
		m, err := agentproto.ParseMsg(p.buf.Bytes())
		p.mu.Unlock()
		if err != nil || m.T != agentproto.MsgCmd {
			t.Fatalf("reply: %+v, %v", m, err)
		}
		if got := m.Job(); !reflect.DeepEqual(got, job) {
			t.Errorf("job %+v, want %+v", got, job)
		}
		if before.IsZero() || m.TimeNS < before.UnixNano() || time.Since(time.Unix(0, m.TimeNS)) > 5*time.Second {
			t.Errorf("time_ns %d, BeforeReply ran at %v", m.TimeNS, before)
		}
		seeds = append(seeds, m.Seed)
	}
	if len(seeds[0]) != seedLen || bytes.Equal(seeds[0], seeds[1]) {
		t.Errorf("seeds %x and %x: want two different %d-byte seeds", seeds[0], seeds[1], seedLen)
	}
}
