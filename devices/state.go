package devices

import (
	"fmt"

	"github.com/microvm-dev/microvm/internal/snapshot"
)

// The legacy devices' snapshot states (snapshot.Stateful).

const serialStateVersion = 1

// SaveState saves the UART's registers and receive FIFO. The transmit side
// has no state: THR is always empty.
func (s *Serial) SaveState() (snapshot.DeviceState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var e snapshot.Encoder
	for _, r := range []uint8{s.ier, s.lcr, s.mcr, s.scr, s.dll, s.dlm, s.fcr} {
		e.U8(r)
	}
	e.Blob(s.rx)
	e.Bool(s.threPending)
	return snapshot.DeviceState{Version: serialStateVersion, Data: e.Bytes()}, nil
}

// RestoreState puts saved registers back and drives the interrupt line to
// match them (the restored IOAPIC has the line's last level too; an edge
// KVM sees twice is one interrupt).
func (s *Serial) RestoreState(st snapshot.DeviceState) error {
	d, err := st.Decoder(serialStateVersion, "16550A UART")
	if err != nil {
		return err
	}
	var r [7]uint8
	for i := range r {
		r[i] = d.U8()
	}
	rx := d.Blob(fifoSize)
	thre := d.Bool()
	if err := d.Finish(); err != nil {
		return fmt.Errorf("16550A UART: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ier, s.lcr, s.mcr, s.scr, s.dll, s.dlm, s.fcr = r[0]&0x0f, r[1], r[2]&0x1f, r[3], r[4], r[5], r[6]
	s.rx = append([]byte(nil), rx...)
	s.threPending = thre
	s.irqHigh = false
	s.updateIRQ()
	return nil
}

// The i8042 and the debug port keep nothing between accesses.

func (d *I8042) SaveState() (snapshot.DeviceState, error) { return snapshot.Stateless{}.SaveState() }
func (d *I8042) RestoreState(s snapshot.DeviceState) error {
	return snapshot.Stateless{}.RestoreState(s)
}

func (d *DebugPort) SaveState() (snapshot.DeviceState, error) {
	return snapshot.Stateless{}.SaveState()
}
func (d *DebugPort) RestoreState(s snapshot.DeviceState) error {
	return snapshot.Stateless{}.RestoreState(s)
}

// The ACPI power registers keep nothing either: every write acts at once
// (or is ignored), and reads are 0. Their S5 type and reset value come
// from the machine's FADT, which is in the snapshot's guest memory and is
// built the same way for the same configuration.

func (d *ACPIPM) SaveState() (snapshot.DeviceState, error) {
	return snapshot.Stateless{}.SaveState()
}
func (d *ACPIPM) RestoreState(s snapshot.DeviceState) error {
	return snapshot.Stateless{}.RestoreState(s)
}
