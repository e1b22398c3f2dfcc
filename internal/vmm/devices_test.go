package vmm

import (
	"strings"
	"testing"

	"github.com/microvm-dev/microvm/devices"
	"github.com/microvm-dev/microvm/devices/virtio"
	"github.com/microvm-dev/microvm/internal/vmm/layout"
)

// legacyDM is a device manager with the legacy devices placed (every one a
// stand-in register file d), and the ACPI registers if acpi is set.
func legacyDM(t *testing.T, acpi devices.Device) (*DeviceManager, devices.Device) {
	t.Helper()
	dm := newDeviceManager()
	d := &devices.DebugPort{}
	if err := dm.AddLegacy(Legacy{COM1: d, I8042: d, Debug: d, ACPI: acpi}); err != nil {
		t.Fatal(err)
	}
	return dm, d
}

// TestDeviceManager: slots are assigned in order, from one record, and the
// command line announces exactly the virtio devices.
func TestDeviceManager(t *testing.T) {
	dm, d := legacyDM(t, nil)
	for _, name := range []string{"virtio-console", "virtio-blk vda", "virtio-rng"} {
		if _, err := dm.AddVirtio(name, virtio.RNG{}); err != nil {
			t.Fatal(err)
		}
	}
	want := " virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6 virtio_mmio.device=4K@0xd0002000:7"
	if got := dm.Cmdline(); got != want {
		t.Errorf("Cmdline() = %q\nwant        %q", got, want)
	}
	got := dm.Devices()
	if len(got) != 6 || got[0].Kind != PIODevice || got[0].Base != 0x3f8 || got[0].IRQ != 4 || got[2].Base != 0x3f0 {
		t.Fatalf("devices %+v", got)
	}
	if d := got[5]; d.Name != "virtio-rng" || d.Kind != VirtioMMIODevice || d.Base != 0xd0002000 || d.Size != 0x1000 || d.IRQ != 7 || d.VirtioID != 4 {
		t.Errorf("rng record %+v", d)
	}
	// The legacy devices have fixed places: a second set overlaps them.
	if err := dm.AddLegacy(Legacy{COM1: d, I8042: d, Debug: d}); err == nil {
		t.Error("second set of legacy devices accepted")
	}
}

func TestDeviceManagerFull(t *testing.T) {
	dm := newDeviceManager()
	for i := 0; i < layout.MaxVirtioDevices; i++ {
		d, err := dm.AddVirtio("d", virtio.RNG{})
		if err != nil {
			t.Fatalf("device %d: %v", i, err)
		}
		if d.IRQ > layout.MaxIRQ {
			t.Fatalf("device %d got IRQ %d beyond the IOAPIC's %d pins", i, d.IRQ, layout.MaxIRQ)
		}
	}
	_, err := dm.AddVirtio("one too many", virtio.RNG{})
	if !IsInputError(err) || !strings.Contains(err.Error(), "Disks/Nets") {
		t.Errorf("17th device: %v, want an input error naming Disks/Nets", err)
	}
	if n := strings.Count(dm.Cmdline(), "virtio_mmio.device="); n != layout.MaxVirtioDevices {
		t.Errorf("%d devices announced", n)
	}
}

// TestCloseThenInput is the crash of issue 12: input that arrives after the
// machine was closed must be refused, not reach a released device. Close is
// idempotent.
func TestCloseThenInput(t *testing.T) {
	m := newMachine(Config{})
	m.Close()
	m.Close()
	if err := m.SendInput(t.Context(), []byte("late")); err != ErrClosed {
		t.Fatalf("SendInput after Close = %v, want ErrClosed", err)
	}
}
