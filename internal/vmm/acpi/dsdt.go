package acpi

import (
	"fmt"

	"github.com/microvm-dev/microvm/internal/acpi/aml"
)

// dsdtRevision 2: integers in the DSDT's AML are 64 bits (5.2.11.1).
const dsdtRevision = 2

// DSDT is the Differentiated System Description Table (5.2.11.1): each of
// c.Devices under \_SB with its _HID, _UID and _CRS (6.1.5, 6.1.12, 6.2.2),
// and \_S5 (7.4.2) with the SLP_TYP value that makes the sleep control
// register power the machine off.
//
// \_SB is written "_SB" at the root, the shortest name path, as iasl's
// name optimizer writes it, so the tests can compare bytes.
func DSDT(c Config) ([]byte, error) {
	var devs [][]byte
	for _, d := range c.Devices {
		dev, err := device(d)
		if err != nil {
			return nil, err
		}
		devs = append(devs, dev)
	}
	if g := c.VMGenID; g != nil {
		devs = append(devs, vmGenIDDevices(*g)...)
	}
	body := aml.Scope("_SB", devs...)
	s5 := uint64(c.S5SleepType)
	body = append(body, aml.Name("_S5", aml.Package(aml.Int(s5), aml.Int(0), aml.Int(0), aml.Int(0)))...)
	return table("DSDT", dsdtRevision, body), nil
}

// device encodes one Device() with its current resources.
func device(d Device) ([]byte, error) {
	var hid []byte
	switch {
	case isEISAID(d.HID):
		hid = aml.EISAID(d.HID)
	case len(d.HID) == 8:
		hid = aml.String(d.HID) // an ACPI ID (6.1.5): 4 letters, 4 hex digits
	default:
		return nil, fmt.Errorf("acpi: device %s: _HID %q is neither a PNP nor an ACPI ID", d.Name, d.HID)
	}
	var res [][]byte
	if d.IOPort {
		if d.Base+d.Size > 0x10000 || d.Size > 0xff {
			return nil, fmt.Errorf("acpi: device %s: ports %#x+%#x do not fit an I/O descriptor", d.Name, d.Base, d.Size)
		}
		res = append(res, aml.IO(uint16(d.Base), uint16(d.Base), 0, uint8(d.Size)))
		if d.IRQ != 0 {
			if d.IRQ > 15 {
				return nil, fmt.Errorf("acpi: device %s: IRQ %d is not an ISA IRQ", d.Name, d.IRQ)
			}
			res = append(res, aml.IRQNoFlags(uint8(d.IRQ)))
		}
	} else {
		if d.Base+d.Size > 1<<32 {
			return nil, fmt.Errorf("acpi: device %s: window %#x+%#x is above 4 GiB", d.Name, d.Base, d.Size)
		}
		res = append(res, aml.Memory32Fixed(true, uint32(d.Base), uint32(d.Size)))
		if d.IRQ != 0 {
			// Edge triggered: KVM's irqfd raises and lowers the line
			// for each interrupt, which an edge-triggered IOAPIC pin
			// takes as one interrupt (virtio-mmio's ISR is read and
			// acknowledged by the driver, 4.2.2).
			res = append(res, aml.Interrupt(aml.InterruptFlags{Consumer: true, Edge: true}, d.IRQ))
		}
	}
	return aml.Device(d.Name,
		aml.Name("_HID", hid),
		aml.Name("_UID", aml.Int(d.UID)),
		aml.Name("_CRS", aml.ResourceTemplate(res...)),
	), nil
}

// isEISAID: three capital letters and four hex digits ("PNP0501").
func isEISAID(id string) bool {
	if len(id) != 7 {
		return false
	}
	for i, c := range []byte(id) {
		letter := c >= 'A' && c <= 'Z'
		hex := (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F')
		if (i < 3 && !letter) || (i >= 3 && !hex) {
			return false
		}
	}
	return true
}

// vmGenIDDevices are VGEN, the generation ID (its _CID and _DDN as the
// specification names them; ACPICA upper-cases a string _CID, which is
// how Linux's "VM_GEN_COUNTER" matches it), and GED0, the generic event
// device (ACPI0013) whose one interrupt notifies VGEN.
func vmGenIDDevices(g VMGenID) [][]byte {
	return [][]byte{
		aml.Device("VGEN",
			aml.Name("_HID", aml.String("MVMG0001")),
			aml.Name("_CID", aml.String("VM_Gen_Counter")),
			aml.Name("_DDN", aml.String("VM_Gen_Counter")),
			aml.Name("ADDR", aml.Package(aml.Int(g.Addr&0xffffffff), aml.Int(g.Addr>>32))),
		),
		aml.Device("GED0",
			aml.Name("_HID", aml.String("ACPI0013")),
			aml.Name("_UID", aml.Int(0)),
			aml.Name("_CRS", aml.ResourceTemplate(aml.Interrupt(aml.InterruptFlags{Consumer: true, Edge: true}, g.IRQ))),
			aml.Method("_EVT", 1, false, aml.Notify("VGEN", 0x80)),
		),
	}
}
