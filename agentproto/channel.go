package agentproto

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// The agent channel is the virtio-console port named ChannelName. When the
// VMM provides it, it adds ChannelParam=1 to the kernel command line, and
// the agent exchanges newline-delimited JSON messages (Msg) over the port
// instead of taking its command from the command line and reporting through
// the debug port:
//
//	guest: {"t":"ready"}
//	host:  {"t":"cmd","argv":["sh","-c","..."],"seed":"<base64>","time_ns":1733000000000000000}
//	       (no argv: nothing to run; mounts, root and dir as in Job)
//	guest: {"t":"milestone","code":2}
//	guest: {"t":"exit","status":7}
//
// The channel has no size limit on argv, unlike the command line. "cmd"
// with no argv means nothing to run. Its seed (MinSeed to MaxSeed bytes
// from the host's getrandom) is mixed into the guest's entropy pool and
// its CRNG reseeded, and time_ns (the host's wall clock, ns since the
// epoch) sets the guest's clock, before the command runs: a guest restored
// from a snapshot is a clone of every other guest restored from it, with
// their CRNG state and the clock of the moment the snapshot was taken.
const (
	ChannelName  = "microvm.agent"
	ChannelParam = "microvm.chan"
	// MaxMsgLen bounds one message line; longer lines are refused.
	MaxMsgLen = 1 << 20
	// MinSeed and MaxSeed bound the entropy a "cmd" carries.
	MinSeed = 32
	MaxSeed = 512
)

// Message types.
const (
	MsgReady     = "ready"
	MsgCmd       = "cmd"
	MsgMilestone = "milestone"
	MsgExit      = "exit"
)

// Msg is one agent-channel message.
type Msg struct {
	T      string   `json:"t"`
	Argv   []string `json:"argv,omitempty"`
	Mounts []Mount  `json:"mounts,omitempty"`
	Root   *Root    `json:"root,omitempty"`
	Dir    string   `json:"dir,omitempty"`
	Code   uint8    `json:"code,omitempty"`
	Status int      `json:"status"`
	// Seed and TimeNS, in "cmd" (see above); absent from older hosts.
	Seed   []byte `json:"seed,omitempty"`
	TimeNS int64  `json:"time_ns,omitempty"`
}

// CmdMsg is the "cmd" message that carries j.
func CmdMsg(j Job) Msg {
	return Msg{T: MsgCmd, Argv: j.Argv, Mounts: j.Mounts, Root: j.Root, Dir: j.Dir}
}

// Job is the job a "cmd" message carries.
func (m Msg) Job() Job { return Job{Argv: m.Argv, Mounts: m.Mounts, Root: m.Root, Dir: m.Dir} }

// EncodeMsg returns m as one line, newline included.
func EncodeMsg(m Msg) []byte {
	b, err := json.Marshal(m)
	if err != nil { // cannot happen: strings and integers only
		panic(fmt.Sprintf("agentproto: marshal msg: %v", err))
	}
	return append(b, '\n')
}

// ParseMsg decodes one line (without or with its newline). It rejects
// oversized lines, unknown types, and values out of range.
func ParseMsg(line []byte) (Msg, error) {
	line = bytes.TrimRight(line, "\r\n")
	if len(line) > MaxMsgLen {
		return Msg{}, fmt.Errorf("agent message of %d bytes is over the %d-byte limit", len(line), MaxMsgLen)
	}
	var m Msg
	if err := json.Unmarshal(line, &m); err != nil {
		return Msg{}, fmt.Errorf("agent message: %w", err)
	}
	switch m.T {
	case MsgReady:
	case MsgCmd:
		if len(m.Argv) > 0 && m.Argv[0] == "" {
			return Msg{}, fmt.Errorf("agent message: cmd: %w", ErrEmptyArgv)
		}
		if m.Seed != nil && (len(m.Seed) < MinSeed || len(m.Seed) > MaxSeed) {
			return Msg{}, fmt.Errorf("agent message: cmd: a seed of %d bytes; want %d to %d", len(m.Seed), MinSeed, MaxSeed)
		}
		if m.TimeNS < 0 {
			return Msg{}, fmt.Errorf("agent message: cmd: time_ns %d before the epoch", m.TimeNS)
		}
		if err := m.Job().Check(); err != nil {
			return Msg{}, fmt.Errorf("agent message: cmd: %w", err)
		}
	case MsgMilestone:
		if m.Code == 0 {
			return Msg{}, fmt.Errorf("agent message: milestone code 0")
		}
	case MsgExit:
		if m.Status < 0 || m.Status > 255 {
			return Msg{}, fmt.Errorf("agent message: exit status %d out of range 0-255", m.Status)
		}
	default:
		// The type is the guest's, up to MaxMsgLen: quote a bounded prefix.
		return Msg{}, fmt.Errorf("agent message: unknown type %.64q (%d bytes)", m.T, len(m.T))
	}
	return m, nil
}

// LineSplitter cuts a byte stream into lines of at most MaxMsgLen bytes.
// Oversized lines are reported once each and skipped.
type LineSplitter struct {
	buf  []byte
	skip bool // inside an oversized line
}

// Feed adds b and calls line for each complete line (without the newline)
// and tooLong for each line over the limit.
func (s *LineSplitter) Feed(b []byte, line func([]byte), tooLong func()) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		chunk := b
		if i >= 0 {
			chunk = b[:i]
		}
		if !s.skip {
			if len(s.buf)+len(chunk) > MaxMsgLen {
				s.skip, s.buf = true, s.buf[:0]
				tooLong()
			} else {
				s.buf = append(s.buf, chunk...)
			}
		}
		if i < 0 {
			return
		}
		if !s.skip {
			line(s.buf)
		}
		s.buf, s.skip = s.buf[:0], false
		b = b[i+1:]
	}
}
