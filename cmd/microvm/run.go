package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/microvm-dev/microvm/initrd/agentproto"
	"github.com/microvm-dev/microvm/vmm"
)

// Kernel parameters for guests driven by the agent: quiet boot, reset via
// the i8042 on reboot, and an immediate reboot (reported as a crash) on panic.
const agentCmdline = "reboot=k panic=-1 quiet"

func runRun(start time.Time, args []string) int {
	var f vmFlags
	fs := newFlags("run")
	f.register(fs, "")
	fs.Lookup("cmdline").Usage = "extra kernel command line parameters"
	if done, code := parseFlags(fs, "run [--kernel K] [--initrd I] [--cpus N] [--memory M] [--disk PATH[,ro]] [--net tap=NAME] [--console serial|virtio] [--timeout D] -- CMD [ARGS...]", args); done {
		return code
	}
	argv := fs.Args()
	if len(argv) == 0 || argv[0] == "" {
		return fail(vmm.CodeUsage, "run: no command given (usage: microvm run [flags] -- CMD [ARGS...])")
	}
	if err := f.defaultArtifacts(); err != nil {
		return failErr(err)
	}
	cfg, err := f.config(start)
	if err != nil {
		return failErr(err)
	}
	cfg.Cmdline = joinCmdline(f.consoleParam(), agentCmdline, f.cmdline)
	cfg.Command = argv
	// Only the command's own output is streamed: console bytes before the
	// agent's "ready" milestone (kernel log, agent banner) are held back and
	// shown only if the guest never gets that far.
	g := &gate{w: os.Stdout}
	cfg.Console = g
	cfg.OnMilestone = func(code uint8, _ uint32) {
		switch code {
		case agentproto.MilestoneReady:
			g.open()
		case agentproto.MilestoneCmdDone:
			g.close()
		}
	}
	res, code := execute(cfg, &f, false)
	if res == nil {
		return code
	}
	if !g.wasOpened() {
		os.Stderr.Write(g.held())
	}
	if code != 0 {
		return code
	}
	if res.GuestStatus < 0 {
		// The command itself rebooted or powered off the guest: a clean end.
		fmt.Fprintf(os.Stderr, "microvm: guest %s before the command reported an exit status\n", res.Reason)
		return 0
	}
	return res.GuestStatus
}

func joinCmdline(parts ...string) string {
	var b bytes.Buffer
	for _, p := range parts {
		if p == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(p)
	}
	return b.String()
}

// gate passes writes through only while open; before it first opens it keeps
// the last holdMax bytes for diagnostics.
type gate struct {
	mu     sync.Mutex
	w      io.Writer
	state  int // 0 before, 1 open, 2 closed
	buf    []byte
	opened bool
}

const holdMax = 64 << 10

func (g *gate) Write(b []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch g.state {
	case 0:
		g.buf = append(g.buf, b...)
		if len(g.buf) > holdMax {
			g.buf = g.buf[len(g.buf)-holdMax:]
		}
	case 1:
		return g.w.Write(b)
	}
	return len(b), nil
}

func (g *gate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.state == 0 {
		g.state, g.opened, g.buf = 1, true, nil
	}
}

func (g *gate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.state = 2
}

func (g *gate) wasOpened() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.opened
}

func (g *gate) held() []byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]byte(nil), g.buf...)
}

// lineBuffer collects console output for parsing after the run.
type lineBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lineBuffer) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buf.Len() < 4<<20 {
		l.buf.Write(b)
	}
	return len(b), nil
}

func (l *lineBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
