package main

import (
	"bytes"
	"fmt"
	"os"
	"sync"

	"github.com/microvm-dev/microvm"
)

// Kernel parameters for guests driven by the agent (uname builds its own).
const agentCmdline = microvm.AgentCmdline

func runRun(e *env, args []string) int {
	var f vmFlags
	fs := newFlags("run")
	f.register(fs, "")
	fs.Lookup("cmdline").Usage = "extra kernel command line parameters"
	if done, code := parseFlags(fs, "run [--kernel K] [--initrd I] [--cpus N] [--memory M] [--disk PATH[,ro]] [--net tap=NAME] [--console serial|virtio] [--timeout D] -- CMD [ARGS...]", args); done {
		return code
	}
	argv := fs.Args()
	if len(argv) == 0 || argv[0] == "" {
		return fail(microvm.CodeUsage, "run: no command given (usage: microvm run [flags] -- CMD [ARGS...])")
	}
	if err := f.defaultArtifacts(); err != nil {
		return failErr(err)
	}
	cfg, err := f.config(e.start)
	if err != nil {
		return failErr(err)
	}
	// The API streams only the command's own output; the kernel log comes
	// back in BootLog if the guest never got as far as the agent.
	cfg.Command = argv
	res, code := execute(e, cfg, &f, false)
	if res == nil {
		return code
	}
	os.Stderr.Write(res.BootLog)
	if res.GuestStatus < 0 && (res.Reason == microvm.ExitReset || res.Reason == microvm.ExitPoweroff) {
		// The command itself rebooted or powered off the guest: a clean end.
		fmt.Fprintf(os.Stderr, "microvm: guest %s before the command reported an exit status\n", res.Reason)
	}
	return code
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
