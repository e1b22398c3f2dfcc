package main

import (
	"fmt"
	"os"

	"github.com/microvm-dev/microvm"
)

// Kernel parameters for guests driven by the agent (uname builds its own).
const agentCmdline = microvm.AgentCmdline

func runRun(e *env, args []string) int {
	fs, f := agentFlags("run")
	var sf snapFlags
	sf.register(fs)
	if done, code := parseFlags(fs, "run [--kernel K] [--initrd I] [--cpus N] [--memory M] [--disk PATH[,ro]] [--net tap=NAME] [--share HOSTDIR[:GUESTPATH][,ro]] [--rootfs DIR[,rw]] [--console serial|virtio] [--acpi on|off] [--snapshot DIR | --restore DIR] [--timeout D] [--seccomp kill|log|off] [--uid UID --gid GID] [--jail DIR] -- CMD [ARGS...]", args); done {
		return code
	}
	argv := fs.Args()
	if len(argv) == 0 || argv[0] == "" {
		return fail(microvm.CodeUsage, "run: no command given (usage: microvm run [flags] -- CMD [ARGS...])")
	}
	if err := f.defaults(); err != nil {
		return failErr(err)
	}
	if err := sf.check(fs, f); err != nil {
		return failErr(err)
	}
	cfg, err := f.config(e.start)
	if err != nil {
		return failErr(err)
	}
	// The API streams only the command's own output; the kernel log comes
	// back in BootLog if the guest never got as far as the agent.
	cfg.Command = argv
	res, code := execute(e, cfg, f, false, sf.start())
	if res == nil {
		return code
	}
	os.Stderr.Write(res.BootLog)
	if s := res.Snapshot; s != nil && s.Err != nil {
		fmt.Fprintf(os.Stderr, "microvm: --snapshot %s: not saved: %v\n", s.Dir, s.Err)
	}
	if res.GuestStatus < 0 && (res.Reason == microvm.ExitReset || res.Reason == microvm.ExitPoweroff) {
		// The command itself rebooted or powered off the guest: a clean end.
		fmt.Fprintf(os.Stderr, "microvm: guest %s before the command reported an exit status\n", res.Reason)
	}
	return code
}
