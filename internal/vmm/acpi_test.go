package vmm

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/microvm-dev/microvm/devices"
	"github.com/microvm-dev/microvm/devices/virtio"
	"github.com/microvm-dev/microvm/internal/vmm/acpi"
)

// TestACPIFromDeviceRecords: the DSDT is derived from the device manager's
// records alone, and is what iasl compiles from the ASL that describes the
// same machine (acpi/testdata/dsdt.asl: COM1 and two virtio-mmio windows).
// The devices without a _HID (i8042, debug port, ACPI registers) stay out.
func TestACPIFromDeviceRecords(t *testing.T) {
	dm, _ := legacyDM(t, &devices.ACPIPM{})
	for _, name := range []string{"virtio-rng", "virtio-blk vda"} {
		if _, err := dm.AddVirtio(name, virtio.RNG{}); err != nil {
			t.Fatal(err)
		}
	}
	tb, err := ACPITables(2, dm.Devices())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range tb.Parts {
		if s := acpi.Checksum8(tb.Blob[p.Off : p.Off+p.Size]); p.Sig != "RSDP" && s != 0 {
			t.Errorf("%s sums to %#x", p.Sig, s)
		}
	}
	want, err := os.ReadFile("acpi/testdata/dsdt.aml")
	if err != nil {
		t.Fatal(err)
	}
	if got := tb.Table("DSDT"); !bytes.Equal(got[36:], want[36:]) {
		t.Errorf("DSDT from the records\n got  % x\n want % x", got[36:], want[36:])
	}
	if got := dm.Devices(); got[3].Name != "acpi" || got[3].Base != 0x600 || got[3].HID != "" {
		t.Errorf("ACPI register record %+v", got[3])
	}
	// Nothing but the virtio devices goes on a command line.
	if c := dm.Cmdline(); strings.Count(c, "virtio_mmio.device=") != 2 {
		t.Errorf("Cmdline() = %q", c)
	}
}
