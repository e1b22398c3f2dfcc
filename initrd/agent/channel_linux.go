package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/microvm-dev/microvm/agentproto"
)

// channel is the agent's end of the virtio-console port named
// agentproto.ChannelName (/dev/vportNpM).
type channel struct {
	f *os.File
	r *bufio.Reader
}

// openChannel waits (up to timeout: the port appears once the console
// driver has exchanged its control messages) for the agent port and opens it.
func openChannel(timeout time.Duration) (*channel, error) {
	deadline := time.Now().Add(timeout)
	for {
		names, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
		for _, n := range names {
			b, err := os.ReadFile(n)
			if err != nil || strings.TrimSpace(string(b)) != agentproto.ChannelName {
				continue
			}
			dev := "/dev/" + filepath.Base(filepath.Dir(n))
			f, err := os.OpenFile(dev, os.O_RDWR, 0)
			if err != nil {
				return nil, fmt.Errorf("open agent channel %s: %w", dev, err)
			}
			return &channel{f: f, r: bufio.NewReaderSize(f, 64*1024)}, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no virtio port named %s after %v", agentproto.ChannelName, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (c *channel) send(m agentproto.Msg) error {
	if _, err := c.f.Write(agentproto.EncodeMsg(m)); err != nil {
		return fmt.Errorf("agent channel: send %s: %w", m.T, err)
	}
	return nil
}

// recv reads one message.
func (c *channel) recv() (agentproto.Msg, error) {
	var line []byte
	for {
		chunk, isPrefix, err := c.r.ReadLine()
		if err != nil {
			return agentproto.Msg{}, fmt.Errorf("agent channel: %w", err)
		}
		line = append(line, chunk...)
		if len(line) > agentproto.MaxMsgLen {
			return agentproto.Msg{}, fmt.Errorf("agent channel: message over %d bytes", agentproto.MaxMsgLen)
		}
		if !isPrefix {
			return agentproto.ParseMsg(line)
		}
	}
}
