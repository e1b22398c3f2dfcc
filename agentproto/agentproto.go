// Package agentproto is the contract between the microvm VMM (host) and the
// guest agent that runs as u-root's uinit inside the initrd.
//
// It defines:
//   - the boot/debug I/O port and the milestone codes the agent writes to it;
//   - how the command to run is passed on the kernel command line
//     (microvm.cmd=<EncodeCmd(argv)>);
//   - the "@@microvm-uname {json}" line printed in microvm.uname=1 mode.
//
// The package is pure Go (uname_linux.go aside, which both sides call) so
// the host can import it.
package agentproto

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// DebugPort is the VMM's boot/debug I/O port.
//
// A 1-byte write of C is milestone C. A 4-byte write carries the milestone
// code in the low byte and a 24-bit value in the upper three bytes
// (see PackMilestone / UnpackMilestone).
const DebugPort uint16 = 0x3f0

// Milestone codes written to DebugPort.
const (
	MilestoneInit    uint8 = 0x01 // agent (uinit) reached
	MilestoneReady   uint8 = 0x02 // agent ready, about to start the command
	MilestoneCmdDone uint8 = 0x03 // command finished; value = exit status 0..255 (128+signal if killed)
)

// MaxMilestoneValue is the largest value a 4-byte milestone write can carry.
const MaxMilestoneValue = 1<<24 - 1

// PackMilestone returns the 32-bit word for a 4-byte write of code with value
// (value is truncated to 24 bits).
func PackMilestone(code uint8, value uint32) uint32 {
	return uint32(code) | (value&MaxMilestoneValue)<<8
}

// UnpackMilestone splits a 32-bit milestone word into code and value.
func UnpackMilestone(word uint32) (code uint8, value uint32) {
	return uint8(word), word >> 8
}

// Kernel command line parameters understood by the agent. Both contain a dot,
// so the kernel treats them as (unknown) module parameters and does not pass
// them to init's environment or argv.
const (
	// CmdParam carries EncodeCmd(argv): microvm.cmd=<encoded>.
	CmdParam = "microvm.cmd"
	// UnameParam=1 makes the agent print FormatUnameLine(...) and power off.
	UnameParam = "microvm.uname"
)

// EncodeCmd encodes argv as base64url without padding of the JSON array of
// strings. The result only contains [A-Za-z0-9_-], so it is always a single
// kernel command line token and needs no quoting: "microvm.cmd=" + EncodeCmd(argv).
//
// Strings are encoded as JSON, so bytes that are not valid UTF-8 are replaced
// by U+FFFD. Mind the kernel's command line limit (2048 bytes on x86):
// the encoding is about 4/3 of the JSON size.
func EncodeCmd(argv []string) string {
	if argv == nil {
		argv = []string{}
	}
	b, err := json.Marshal(argv)
	if err != nil { // cannot happen for []string
		panic(fmt.Sprintf("agentproto: marshal argv: %v", err))
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// ErrEmptyArgv is returned by DecodeCmd for an empty argv or an empty argv[0].
var ErrEmptyArgv = errors.New("empty argv")

// DecodeCmd reverses EncodeCmd. Surrounding whitespace, double quotes and
// trailing '=' padding are tolerated. It fails on malformed input, an empty
// argv, or an empty argv[0].
func DecodeCmd(s string) ([]string, error) {
	s = trimParam(s)
	if s == "" {
		return nil, fmt.Errorf("decode %s: %w", CmdParam, ErrEmptyArgv)
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("decode %s: base64url: %w", CmdParam, err)
	}
	var argv []string
	if err := json.Unmarshal(b, &argv); err != nil {
		return nil, fmt.Errorf("decode %s: json: %w", CmdParam, err)
	}
	if len(argv) == 0 || argv[0] == "" {
		return nil, fmt.Errorf("decode %s: %w", CmdParam, ErrEmptyArgv)
	}
	return argv, nil
}

// trimParam drops what may surround a parameter's value: whitespace,
// double quotes, base64 padding.
func trimParam(s string) string {
	s = strings.TrimSpace(s)
	s = strings.Trim(s, `"`)
	return strings.TrimRight(s, "=")
}

// UnamePrefix starts the line printed in microvm.uname=1 mode.
const UnamePrefix = "@@microvm-uname "

// Uname is the payload of the "@@microvm-uname {json}" line.
type Uname struct {
	Sysname  string  `json:"sysname"`
	Nodename string  `json:"nodename"`
	Release  string  `json:"release"`
	Version  string  `json:"version"`
	Machine  string  `json:"machine"`
	UptimeS  float64 `json:"uptime_s"` // seconds since guest kernel boot (/proc/uptime)
}

// FormatUnameLine returns UnamePrefix + the JSON of u, without a newline.
func FormatUnameLine(u Uname) string {
	b, err := json.Marshal(u)
	if err != nil { // cannot happen: only strings and a finite float
		b = []byte("{}")
	}
	return UnamePrefix + string(b)
}

// ErrNoUnameLine is returned by ParseUnameLine when line holds no uname line.
var ErrNoUnameLine = errors.New("no " + strings.TrimSpace(UnamePrefix) + " line")

// ParseUnameLine parses a console line containing FormatUnameLine output.
// The prefix may appear anywhere in the line (console noise before it, a
// trailing "\r" or other text after the JSON object are ignored).
func ParseUnameLine(line string) (Uname, error) {
	i := strings.Index(line, UnamePrefix)
	if i < 0 {
		return Uname{}, ErrNoUnameLine
	}
	var u Uname
	dec := json.NewDecoder(strings.NewReader(line[i+len(UnamePrefix):]))
	if err := dec.Decode(&u); err != nil {
		return Uname{}, fmt.Errorf("parse uname line: %w", err)
	}
	return u, nil
}

// String formats u like `uname -a` without the trailing fields:
// "sysname nodename release version machine".
func (u Uname) String() string {
	return strings.Join([]string{u.Sysname, u.Nodename, u.Release, u.Version, u.Machine}, " ")
}
