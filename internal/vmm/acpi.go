package vmm

import (
	"fmt"
	"strings"

	"github.com/microvm-dev/microvm/devices"
	"github.com/microvm-dev/microvm/internal/vmm/acpi"
	"github.com/microvm-dev/microvm/internal/vmm/boot"
	"github.com/microvm-dev/microvm/internal/vmm/layout"
)

// The values the guest writes to the ACPI registers (devices.ACPIPM):
// SLP_TYP of soft-off, as \_S5 announces it (ACPI 6.5, 7.4.2), and the
// FADT's RESET_VALUE (4.8.3.6).
const (
	acpiS5SleepType = 5
	acpiResetValue  = 1
	isaIRQs         = 16
)

// newACPIPM is the ACPI power device: S5 and the reset register end the
// machine at once, through the same exit decision as the i8042's reset.
func (m *Machine) newACPIPM() *devices.ACPIPM {
	return &devices.ACPIPM{
		S5SleepType: acpiS5SleepType,
		ResetValue:  acpiResetValue,
		OnPoweroff: func() {
			m.guestStopped(vcpuExit{reason: ExitPoweroff, detail: "ACPI S5 through the sleep control register"})
		},
		OnReset: func() { m.guestStopped(vcpuExit{reason: ExitReset, detail: "ACPI reset register"}) },
		Logf:    m.deviceLogf("acpi"),
	}
}

// acpiConfig describes the machine to package acpi: the MADT from the vCPU
// count and the layout table (the same as the MP table), the DSDT from the
// device manager's records of the devices that have a _HID.
func acpiConfig(cpus int, infos []DeviceInfo) acpi.Config {
	c := acpi.Config{
		CPUs:         cpus,
		LAPICAddr:    layout.LAPICAddr,
		IOAPICAddr:   layout.IOAPICAddr,
		IOAPICID:     boot.IOAPICID(cpus),
		ISAIRQs:      isaIRQs,
		SleepControl: layout.ACPIPMPort + devices.ACPISleepControl,
		SleepStatus:  layout.ACPIPMPort + devices.ACPISleepStatus,
		Reset:        layout.ACPIPMPort + devices.ACPIReset,
		ResetValue:   acpiResetValue,
		S5SleepType:  acpiS5SleepType,
	}
	nVirtio := 0
	for _, d := range infos {
		if d.Kind == VMGenIDDevice {
			c.VMGenID = &acpi.VMGenID{Addr: d.Base, IRQ: d.IRQ}
			continue
		}
		if d.HID == "" {
			continue
		}
		dev := acpi.Device{HID: d.HID, Base: d.Base, Size: d.Size, IRQ: d.IRQ}
		switch d.Kind {
		case PIODevice:
			dev.Name, dev.IOPort, dev.UID = strings.ToUpper(d.Name), true, 1
		case VirtioMMIODevice:
			dev.Name, dev.UID = fmt.Sprintf("VR%02X", nVirtio), uint64(nVirtio)
			nVirtio++
		}
		c.Devices = append(c.Devices, dev)
	}
	return c
}

// ACPITables returns the tables a machine with cpus vCPUs and these
// devices gets, laid out at layout.ACPITablesAddr.
func ACPITables(cpus int, infos []DeviceInfo) (*acpi.Tables, error) {
	return acpi.Build(layout.ACPITablesAddr, layout.VMGenIDAddr-layout.ACPITablesAddr, acpiConfig(cpus, infos))
}

// acpiTables writes the ACPI tables into guest memory, once every device
// has its record.
func (b *builder) acpiTables() error {
	m := b.m
	if !m.cfg.ACPI {
		return nil
	}
	t, err := ACPITables(m.cfg.CPUs, m.devices.Devices())
	if err != nil {
		return err
	}
	return m.mem.Write(t.Base, t.Blob)
}
