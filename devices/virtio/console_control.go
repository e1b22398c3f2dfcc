package virtio

import "encoding/binary"

// The control queues of a MULTIPORT console: the driver asks for the
// ports and opens them, the device announces them.
const (
	// Control events (spec 5.3.6.2).
	conDeviceReady = 0
	conDeviceAdd   = 1
	conPortReady   = 3
	conConsolePort = 4
	conPortOpen    = 6
	conPortName    = 7

	conCtrlLen = 8 // struct virtio_console_control: le32 id, le16 event, le16 value
	// conMaxCtrlOut bounds the control replies waiting for a driver buffer
	// on the control receive queue. An honest driver causes at most three
	// per port (DEVICE_ADD, PORT_NAME or CONSOLE_PORT, PORT_OPEN); one that
	// sends requests without ever giving receive buffers gets the rest
	// dropped (and counted) instead of the host keeping them all.
	conMaxCtrlOut = 64
)

// ControlMsg is one virtio-console control message.
type ControlMsg struct {
	ID    uint32
	Event uint16
	Value uint16
	Name  string // PORT_NAME only
}

// ParseControl decodes a control message the driver sent.
func ParseControl(b []byte) (ControlMsg, error) {
	if len(b) < conCtrlLen {
		return ControlMsg{}, qerr("control message of %d bytes; need %d", len(b), conCtrlLen)
	}
	m := ControlMsg{
		ID:    binary.LittleEndian.Uint32(b[0:]),
		Event: binary.LittleEndian.Uint16(b[4:]),
		Value: binary.LittleEndian.Uint16(b[6:]),
	}
	if m.Event == conPortName {
		m.Name = string(b[conCtrlLen:])
	}
	return m, nil
}

func (m ControlMsg) bytes() []byte {
	b := make([]byte, conCtrlLen, conCtrlLen+len(m.Name))
	binary.LittleEndian.PutUint32(b[0:], m.ID)
	binary.LittleEndian.PutUint16(b[4:], m.Event)
	binary.LittleEndian.PutUint16(b[6:], m.Value)
	return append(b, m.Name...)
}

// control handles the driver's control messages (spec 5.3.6.2).
func (s *conState) control() (bool, error) {
	if !s.c.multiport || !s.ready(qCtrlTX) {
		return false, nil
	}
	q := s.qs.Q[qCtrlTX]
	did := false
	for s.ctx.Err() == nil {
		ch, ok, err := s.pop(qCtrlTX)
		if err != nil || !ok {
			return did, err
		}
		var b [conCtrlLen]byte
		n := gather(b[:], ch.R, 0)
		m, err := ParseControl(b[:n])
		if err != nil {
			return did, err
		}
		s.handle(m)
		q.Push(ch.Head, 0)
		s.used[qCtrlTX], did = true, true
	}
	return did, nil
}

func (s *conState) handle(m ControlMsg) {
	send := func(id uint32, ev uint16, val uint16, name string) {
		if len(s.c.ctrlOut) >= conMaxCtrlOut {
			s.c.ctrlDropped.Add(1)
			return
		}
		s.c.ctrlOut = append(s.c.ctrlOut, ControlMsg{ID: id, Event: ev, Value: val, Name: name}.bytes())
	}
	switch m.Event {
	case conDeviceReady:
		if m.Value == 1 {
			for id := range s.c.Ports {
				send(uint32(id), conDeviceAdd, 0, "")
			}
		}
	case conPortReady:
		if m.ID >= uint32(len(s.c.Ports)) || m.Value != 1 {
			return
		}
		if name := s.c.Ports[m.ID].Name; name != "" {
			send(m.ID, conPortName, 0, name)
		} else {
			send(m.ID, conConsolePort, 1, "")
		}
		// The host end is always connected.
		send(m.ID, conPortOpen, 1, "")
	case conPortOpen:
		if m.ID < uint32(len(s.c.Ports)) {
			s.c.Ports[m.ID].setOpen(m.Value == 1)
		}
	}
}

// flushControl gives queued control messages to the driver.
func (s *conState) flushControl() (bool, error) {
	if len(s.c.ctrlOut) == 0 || !s.ready(qCtrlRX) {
		return false, nil
	}
	q := s.qs.Q[qCtrlRX]
	did := false
	for len(s.c.ctrlOut) > 0 && s.ctx.Err() == nil {
		ch, ok, err := s.pop(qCtrlRX)
		if err != nil || !ok {
			return did, err
		}
		msg := s.c.ctrlOut[0]
		if ch.WritableLen() < len(msg) {
			return did, qerr("control receive buffer of %d bytes is too small for %d", ch.WritableLen(), len(msg))
		}
		q.Push(ch.Head, uint32(scatter(ch.W, 0, msg)))
		s.c.ctrlOut = s.c.ctrlOut[1:]
		s.used[qCtrlRX], did = true, true
	}
	return did, nil
}
