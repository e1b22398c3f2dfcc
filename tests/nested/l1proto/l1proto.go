// Package l1proto is the contract between the nested harness (package
// nested, on the host) and l1init, the /init of the L1 it boots: the config
// file l1init reads, the marker lines it prints on L1's console and the
// exit codes it reports. tests/run.sh greps two of the markers too.
package l1proto

// ConfigPath is where the harness puts the Config, as JSON, in L1's
// initramfs.
const ConfigPath = "/l1config.json"

// Config tells l1init what to run.
type Config struct {
	// Init is the payload's path inside L1; Args its arguments (without
	// argv[0]); Env extra KEY=VALUE entries; Dir its working directory.
	Init string   `json:"init"`
	Args []string `json:"args,omitempty"`
	Env  []string `json:"env,omitempty"`
	Dir  string   `json:"dir,omitempty"`
	// TimeoutMS, if set, bounds the payload; an overrun is killed and
	// reported as ExitTimeout.
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
	// RequireKVM makes a missing /dev/kvm end the run with ExitKVMMissing.
	RequireKVM bool `json:"require_kvm"`
	// HeartbeatMS, if set, makes l1init print a Heartbeat line that often
	// while the payload runs.
	HeartbeatMS int64 `json:"heartbeat_ms,omitempty"`
	// Modules are kernel modules (paths of .ko files inside L1) that
	// l1init loads, in this order, before anything else: a stock L1
	// kernel has KVM as modules. A module that fails to load ends the run
	// with ExitInitError, since L1 would then lack what the payload needs.
	Modules []string `json:"modules,omitempty"`
}

// Lines l1init prints on the console, each on a line of its own.
const (
	// Start: the payload is about to start.
	Start = "@@L1 start"
	// KVMMissing: L1 has no /dev/kvm.
	KVMMissing = "@@L1 kvm missing"
	// Exit, then a space and the payload's exit code, is l1init's last word.
	Exit = "@@L1-EXIT"
	// Heartbeat starts each heartbeat line.
	Heartbeat = "@@L1-HB"
)

// Exit codes l1init reports for a payload that did not exit on its own. A
// payload killed by signal n is reported as 128+n.
const (
	ExitTimeout    = 124 // overran Config.TimeoutMS
	ExitKVMMissing = 125 // /dev/kvm missing and Config.RequireKVM set
	ExitInitError  = 126 // l1init's own failure (no config, cannot start)
	ExitNotFound   = 127 // the payload does not exist
)
