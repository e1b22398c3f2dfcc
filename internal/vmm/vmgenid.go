package vmm

import (
	"crypto/rand"
	"fmt"

	"github.com/microvm-dev/microvm/devices"
	"github.com/microvm-dev/microvm/internal/snapshot"
	"github.com/microvm-dev/microvm/internal/vmm/layout"
)

// vmGenID is the VM generation ID (acpi.VMGenID), with ACPI: a random
// 16-byte identifier in guest memory, new at every boot and at every
// restore of a snapshot. Clones of one snapshot so learn that they are
// clones without any agent: Linux's vmgenid driver reseeds the CRNG when
// the identifier changes (add_vmfork_randomness, "crng reseeded due to
// virtual machine fork"), as the agent's RNDRESEEDCRNG does for ours.
type vmGenID struct {
	mem *Memory
	irq devices.IRQLine // the GED's edge-triggered GSI
}

// generate writes a fresh identifier, from the host's getrandom(2).
func (g *vmGenID) generate() error {
	var id [layout.VMGenIDSize]byte
	_, _ = rand.Read(id[:]) // does not fail on Linux
	if err := g.mem.Write(layout.VMGenIDAddr, id[:]); err != nil {
		return fmt.Errorf("vmgenid: %w", err)
	}
	return nil
}

// SaveState: the identifier is in guest memory, nothing else is kept.
func (g *vmGenID) SaveState() (snapshot.DeviceState, error) { return snapshot.Stateless{}.SaveState() }

// RestoreState gives the restored guest a new identifier and pulses the
// GED's interrupt. It runs after the IOAPIC and LAPICs are restored, which
// latch the edge until the guest runs; the GED's _EVT then notifies VGEN
// (0x80) and the guest reads the new identifier.
func (g *vmGenID) RestoreState(s snapshot.DeviceState) error {
	if err := (snapshot.Stateless{}).RestoreState(s); err != nil {
		return err
	}
	if err := g.generate(); err != nil {
		return err
	}
	if err := g.irq.SetLevel(true); err != nil {
		return fmt.Errorf("vmgenid: GED interrupt: %w", err)
	}
	return g.irq.SetLevel(false)
}
