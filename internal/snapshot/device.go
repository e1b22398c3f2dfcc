package snapshot

import "fmt"

// Stateful is a device whose state a snapshot carries. Every device the
// device manager holds implements it (one without state returns an empty
// DeviceState): a device that does not is refused by Snapshot rather than
// silently restored blank. SaveState is called with the machine paused (no
// vCPU runs and the device serves nothing); RestoreState on a device just
// built from the same configuration, before the guest runs. A device that
// cannot be saved in its present state (a file server with open files)
// returns an error saying why, which Snapshot reports.
type Stateful interface {
	SaveState() (DeviceState, error)
	RestoreState(DeviceState) error
}

// Decoder returns a decoder for s, which must be of version want: what
// names the device for the error.
func (s DeviceState) Decoder(want uint32, what string) (*Decoder, error) {
	if s.Version != want {
		return nil, fmt.Errorf("%s: state version %d; this microvm reads version %d", what, s.Version, want)
	}
	return NewDecoder(s.Data), nil
}

// Stateless is the DeviceState of a device with none, and checks one.
type Stateless struct{}

func (Stateless) SaveState() (DeviceState, error) { return DeviceState{Version: 1}, nil }

func (Stateless) RestoreState(s DeviceState) error {
	if s.Version != 1 || len(s.Data) != 0 {
		return fmt.Errorf("state version %d with %d bytes for a device without state", s.Version, len(s.Data))
	}
	return nil
}

// Refuser is a Stateful device that can say, before the machine is paused,
// that it cannot be saved as it is now. Snapshot asks every device first,
// so that a refusal costs the guest nothing: pausing a device can lose
// state a refusal would have kept (a 9P server's fids live in the device
// goroutine a pause ends). SaveState still checks again.
type Refuser interface {
	CanSnapshot() error
}
