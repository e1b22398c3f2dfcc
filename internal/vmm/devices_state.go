package vmm

import (
	"fmt"

	"github.com/microvm-dev/microvm/internal/snapshot"
)

// The device manager's part of a snapshot: it pauses, saves and restores
// every device it holds, in the order it added them. A device joins
// snapshots by implementing snapshot.Stateful; one that does not makes
// Snapshot fail with its name rather than be restored blank.

// pause stops every virtio device goroutine (the vCPUs are paused
// already, so no register write comes meanwhile).
func (dm *DeviceManager) pause() {
	for _, t := range dm.transports {
		t.Pause()
	}
}

// resume restarts what pause stopped.
func (dm *DeviceManager) resume() {
	for _, t := range dm.transports {
		t.Resume()
	}
}

// canSnapshot asks every device that can refuse a snapshot whether it
// does (snapshot.Refuser), before anything is paused.
func (dm *DeviceManager) canSnapshot() error {
	for i, info := range dm.infos {
		if r, ok := dm.state[i].(snapshot.Refuser); ok {
			if err := r.CanSnapshot(); err != nil {
				return fmt.Errorf("device %s: %w", info.Name, err)
			}
		}
	}
	return nil
}

// saveState returns every device's record and state.
func (dm *DeviceManager) saveState() ([]snapshot.Device, error) {
	out := make([]snapshot.Device, 0, len(dm.infos))
	for i, info := range dm.infos {
		st := dm.state[i]
		if st == nil {
			return nil, fmt.Errorf("device %s cannot be snapshotted", info.Name)
		}
		s, err := st.SaveState()
		if err != nil {
			return nil, fmt.Errorf("device %s: %w", info.Name, err)
		}
		out = append(out, snapshot.Device{
			Name: info.Name, Kind: uint8(info.Kind), Base: info.Base, Size: info.Size,
			IRQ: info.IRQ, VirtioID: info.VirtioID, State: s,
		})
	}
	return out, nil
}

// sameDevices says how a snapshot's device list differs from this
// machine's, or nil if it is the same: a guest restored onto other
// devices, or the same ones at other addresses, would drive hardware that
// is not there.
//
// With only, it compares the devices of that kind alone: before the
// legacy devices are placed, the virtio ones can be checked already.
func (dm *DeviceManager) sameDevices(saved []snapshot.Device, only ...DeviceKind) error {
	mine := dm.infos
	if len(only) > 0 {
		mine = filterKind(dm.infos, func(i DeviceInfo) DeviceKind { return i.Kind }, only[0])
		saved = filterKind(saved, func(d snapshot.Device) DeviceKind { return DeviceKind(d.Kind) }, only[0])
	}
	if len(saved) != len(mine) {
		return fmt.Errorf("the snapshot has %d devices, this machine %d (%s)", len(saved), len(mine), names(mine))
	}
	for i, info := range mine {
		s := saved[i]
		if s.Name != info.Name || DeviceKind(s.Kind) != info.Kind || s.Base != info.Base || s.Size != info.Size || s.IRQ != info.IRQ || s.VirtioID != info.VirtioID {
			return fmt.Errorf("device %d is %s at %#x in the snapshot, %s at %#x here", i, s.Name, s.Base, info.Name, info.Base)
		}
	}
	return nil
}

func filterKind[T any](all []T, kind func(T) DeviceKind, k DeviceKind) []T {
	var out []T
	for _, d := range all {
		if kind(d) == k {
			out = append(out, d)
		}
	}
	return out
}

func names(infos []DeviceInfo) string {
	s := ""
	for i, d := range infos {
		if i > 0 {
			s += ", "
		}
		s += d.Name
	}
	return s
}

// restoreState gives every device its saved state (sameDevices first).
func (dm *DeviceManager) restoreState(saved []snapshot.Device) error {
	if err := dm.sameDevices(saved); err != nil {
		return err
	}
	for i, info := range dm.infos {
		st := dm.state[i]
		if st == nil {
			return fmt.Errorf("device %s cannot be restored", info.Name)
		}
		if err := st.RestoreState(saved[i].State); err != nil {
			return fmt.Errorf("device %s: %w", info.Name, err)
		}
	}
	return nil
}
