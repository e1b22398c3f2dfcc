package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/microvm-dev/microvm"
	"github.com/microvm-dev/microvm/agentproto"
	"github.com/microvm-dev/microvm/internal/agent"
	"github.com/microvm-dev/microvm/internal/report"
)

func runUname(e *env, args []string) int {
	fs, f := agentFlags("uname")
	hostOnly := fs.Bool("host-only", false, "print only this host's uname (with --json: the guest agent's format); boots nothing")
	if done, code := parseFlags(fs, "uname [--kernel K] [--initrd I] [--json] [--host-only]", args); done {
		return code
	}
	if fs.NArg() > 0 {
		return fail(microvm.CodeUsage, "uname: unexpected argument %q", fs.Arg(0))
	}
	if *hostOnly {
		if f.json {
			b, _ := json.Marshal(agent.HostUname())
			fmt.Println(string(b))
		} else {
			fmt.Println(agent.HostUname())
		}
		return 0
	}
	if err := f.defaults(); err != nil {
		return failErr(err)
	}
	cfg, err := f.config(e.start)
	if err != nil {
		return failErr(err)
	}
	cfg.Cmdline = agent.Cmdline(microvm.CmdlineFor(agentCmdline, cfg.VirtioConsole), f.cmdline, agent.UnameParams)
	// The host's side first: once the guest is set up the process is
	// sandboxed, and uname(2) and sysinfo(2) are not in its allowlist.
	host := agent.HostUname()
	var out agent.Capture
	cfg.Stdout = &out
	asJSON := f.json
	f.json = false // --json here means the uname result, not the timeline
	res, code := execute(e, cfg, f, false, microvm.Start)
	if res == nil {
		return code
	}
	guest, found := agent.FindUname(out.String())
	if !found {
		os.Stderr.WriteString(out.String())
		if code == 0 {
			code = microvm.CodeInternal
		}
		return fail(code, "guest did not report its uname (exit: %s): is the initrd's agent missing?", res.Reason)
	}
	toInit, _ := report.PhaseAt(res.Timeline, microvm.PhaseInit)
	cols := []column{{"host", host}, {"guest (microvm)", guest}}
	if outer := os.Getenv("MICROVM_OUTER_HOST"); outer != "" {
		// Inside the nested test harness the "host" is the L1 VM; the
		// harness passes the real machine's uname so all three show.
		var o agentproto.Uname
		if json.Unmarshal([]byte(outer), &o) == nil {
			cols = []column{{"machine", o}, {"L1 host (nested)", host}, {"guest (microvm)", guest}}
		}
	}
	if asJSON {
		b, _ := json.Marshal(map[string]any{"host": host, "guest": guest, "boot_to_init_ms": ms(toInit), "exit_code": code})
		fmt.Println(string(b))
		return code
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 3, ' ', 0)
	row := func(name string, f func(agentproto.Uname) string) {
		fmt.Fprint(tw, name)
		for _, c := range cols {
			fmt.Fprint(tw, "\t"+f(c.u))
		}
		fmt.Fprintln(tw)
	}
	for _, c := range cols {
		fmt.Fprint(tw, "\t"+strings.ToUpper(c.name))
	}
	fmt.Fprintln(tw)
	row("kernel release", func(u agentproto.Uname) string { return u.Release })
	row("kernel version", func(u agentproto.Uname) string { return u.Version })
	row("machine", func(u agentproto.Uname) string { return u.Machine })
	row("hostname", func(u agentproto.Uname) string { return u.Nodename })
	row("uptime", func(u agentproto.Uname) string { return fmtUptime(u.UptimeS) })
	fmt.Fprint(tw, "boot to init")
	for _, c := range cols {
		if c.u == guest {
			fmt.Fprintf(tw, "\t%.0f ms (exec to guest init)", ms(toInit))
		} else {
			fmt.Fprint(tw, "\t-")
		}
	}
	fmt.Fprintln(tw)
	tw.Flush()
	return code
}

type column struct {
	name string
	u    agentproto.Uname
}

func fmtUptime(s float64) string {
	d := time.Duration(s * float64(time.Second))
	if d < time.Minute {
		return fmt.Sprintf("%.2f s", s)
	}
	return d.Round(time.Second).String()
}
