package microvm

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/microvm-dev/microvm/agentproto"
)

func TestConfigBadInput(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"negative timeout", Config{Kernel: "k", Timeout: -1}, "Timeout"},
		{"empty command name", Config{Kernel: "k", Command: []string{""}}, "Command"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := c.cfg.engineConfig()
			if !IsInputError(err) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err %v, want an InputError naming %s", err, c.want)
			}
		})
	}
}

func TestEngineConfigCommand(t *testing.T) {
	vc, g, err := Config{Kernel: "k", Cmdline: "extra=1", Command: []string{"true"}}.engineConfig()
	if err != nil || g == nil {
		t.Fatalf("err %v, gate %v", err, g)
	}
	// The command goes on the command line, after the caller's parameters.
	if want := AgentCmdline + " extra=1 microvm.cmd=" + agentproto.EncodeCmd([]string{"true"}); vc.Cmdline != want || vc.Channel != nil || vc.CPUs != 1 || vc.Memory != DefaultMemory {
		t.Errorf("engine config %+v, want cmdline %q", vc, want)
	}
	// With the virtio console it travels over the agent channel instead.
	vc, _, _ = Config{Kernel: "k", Command: []string{"true"}, VirtioConsole: true}.engineConfig()
	if vc.Channel == nil || vc.Channel.Name != agentproto.ChannelName || !strings.HasSuffix(vc.Cmdline, " microvm.chan=1") || strings.Contains(vc.Cmdline, "microvm.cmd") {
		t.Errorf("virtio console with a command: cmdline %q, channel %+v", vc.Cmdline, vc.Channel)
	}
	vc, g, _ = Config{Kernel: "k"}.engineConfig()
	if g != nil || vc.Cmdline != DefaultCmdline {
		t.Errorf("plain boot: cmdline %q, gate %v", vc.Cmdline, g)
	}
	vc, _, _ = Config{Kernel: "k", VirtioConsole: true}.engineConfig()
	if !strings.HasPrefix(vc.Cmdline, "console=hvc0 ") || !strings.HasSuffix(vc.Cmdline, " microvm.chan=1") || !vc.VirtioConsole || vc.Channel == nil {
		t.Errorf("virtio console: cmdline %q", vc.Cmdline)
	}
}

// TestStartBadInput: input is checked before /dev/kvm, so this runs anywhere.
func TestStartBadInput(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"missing kernel", Config{Kernel: dir + "/nope"}, "no such file"},
		{"kernel is a directory", Config{Kernel: dir}, "is a directory"},
		{"no kernel", Config{}, "Kernel"},
		{"too many cpus", Config{Kernel: dir, CPUs: 1000}, "CPUs"},
	} {
		t.Run(c.name, func(t *testing.T) {
			vm, err := Start(context.Background(), c.cfg)
			if vm != nil || !IsInputError(err) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Start: vm %v, err %v; want an InputError mentioning %q", vm, err, c.want)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Start(ctx, Config{Kernel: dir}); !errors.Is(err, context.Canceled) {
		t.Errorf("Start with a canceled context: %v", err)
	}
}

// TestSandboxOptions: the sandbox fields are checked before anything is
// set up, and NoSandbox refuses what would need the sandbox.
func TestSandboxOptions(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  Config
		want string // the InputError's field, "" for none
	}{
		{"defaults", Config{}, ""},
		{"log", Config{Seccomp: SeccompLog}, ""},
		{"off", Config{Seccomp: SeccompOff}, ""},
		{"bad mode", Config{Seccomp: "strict"}, "Seccomp"},
		{"no sandbox", Config{NoSandbox: true}, ""},
		{"no sandbox, seccomp off", Config{NoSandbox: true, Seccomp: SeccompOff}, ""},
		{"no sandbox with kill", Config{NoSandbox: true, Seccomp: SeccompKill}, "Seccomp"},
		{"no sandbox with RunAs", Config{NoSandbox: true, RunAs: &Credential{UID: 1, GID: 1}}, "RunAs"},
		{"no sandbox with a jail", Config{NoSandbox: true, Jail: "/var/empty"}, "Jail"},
		{"jail under a file", Config{Jail: "/proc/self/status/jail"}, "Jail"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := c.cfg.sandboxOptions()
			var ie *InputError
			switch {
			case c.want == "" && err != nil:
				t.Errorf("err %v, want none", err)
			case c.want != "" && (!errors.As(err, &ie) || ie.What != c.want):
				t.Errorf("err %v, want an InputError for %s", err, c.want)
			}
		})
	}
}
