// Package layout is the one table of guest-physical addresses, I/O ports
// and IRQ numbers. Nothing else in the VMM hard-codes an address: devices,
// the device manager and the boot code take theirs from here.
package layout

import "github.com/microvm-dev/microvm/agentproto"

const (
	KiB = 1 << 10
	MiB = 1 << 20
	GiB = 1 << 30
)

// Guest-physical memory layout.
const (
	// GDTAddr holds the flat boot GDT (null, null, code 0x10, data 0x18, TSS 0x20)
	// required by the 64-bit boot protocol (Documentation/arch/x86/boot.rst).
	GDTAddr = 0x500
	// ZeroPageAddr is struct boot_params; %rsi points here at entry.
	ZeroPageAddr = 0x7000
	// BootStackAddr is the initial %rsp (grows down into 0x8000-0x8fff).
	BootStackAddr = 0x8ff0
	// PML4Addr, PDPTAddr and PDAddr hold the boot identity map, built from
	// 2 MiB pages (1 GiB pages are not available on every host KVM).
	PML4Addr = 0x9000
	PDPTAddr = 0xa000
	PDAddr   = 0xb000
	// MaxIdentityMap bounds the boot identity map: one PD page per GiB.
	MaxIdentityMap = 16 * GiB
	// CmdlineAddr holds the kernel command line; CmdlineMax bounds it.
	CmdlineAddr = 0x20000
	CmdlineMax  = 0x10000
	// GuestFreeStart..GuestFreeEnd is left to the guest (AP trampolines, stacks).
	GuestFreeStart = 0x30000
	GuestFreeEnd   = 0x9f000
	// EBDAStart..HighMemStart is reserved in the e820 map; the MP table lives there.
	EBDAStart    = 0x9fc00
	MPTableAddr  = EBDAStart
	HighMemStart = 0x100000
	// ACPITablesAddr..HighMemStart holds the ACPI tables, the RSDP first:
	// the BIOS area where the legacy RSDP scan looks (ACPI 6.5, 5.2.5.1),
	// reached as well through boot_params.acpi_rsdp_addr. An e820 ACPI
	// entry when the tables are there.
	ACPITablesAddr = 0xe0000
	// VMGenIDAddr..HighMemStart is one page after the ACPI tables' room,
	// reserved in the e820 map (not ACPI-reclaimable, so no guest ever
	// reuses it): the 16-byte VM generation ID the DSDT's VGEN points at.
	VMGenIDAddr = 0xff000
	VMGenIDSize = 16
	// KernelLoadAddr is where a bzImage's protected-mode code is loaded.
	KernelLoadAddr = HighMemStart

	// MMIOHoleStart..MMIOHoleEnd is the 32-bit device hole: RAM beyond it is
	// placed above 4 GiB.
	MMIOHoleStart = 3 * GiB
	MMIOHoleEnd   = 4 * GiB
	// VirtioMMIOBase is the first virtio-mmio window; each device gets
	// VirtioMMIOSize bytes.
	VirtioMMIOBase = 0xd0000000
	VirtioMMIOSize = 0x1000
	IOAPICAddr     = 0xfec00000
	LAPICAddr      = 0xfee00000
	// TSSAddr and IdentityMapAddr are the three pages KVM needs for its
	// real-mode emulation on Intel (KVM_SET_TSS_ADDR, KVM_SET_IDENTITY_MAP_ADDR).
	IdentityMapAddr = 0xfffbc000
	TSSAddr         = 0xfffbd000

	// MinMemory and MaxMemory bound --memory.
	MinMemory = 32 * MiB
	MaxMemory = 1024 * GiB
)

// I/O ports.
const (
	COM1Port     = 0x3f8
	COM1Size     = 8
	I8042Port    = 0x60
	I8042CmdPort = 0x64
	// DebugPort is the boot/debug port: a guest writes a milestone code here
	// and the VMM timestamps it. DebugPortSize covers a no-op register at
	// DebugPort+4 used by the exit-path benchmark.
	DebugPort     = uint64(agentproto.DebugPort) // the guest side of the contract defines it
	DebugPortSize = 8
	// ACPIPMPort is the hardware-reduced ACPI sleep control, sleep status
	// and reset registers (devices.ACPIPM), which the FADT points at.
	ACPIPMPort = 0x600
)

// IRQ numbers (ISA IRQs routed through the in-kernel PIC and IOAPIC).
const (
	COM1IRQ = 4
	// VirtioIRQBase is the first IRQ of the virtio-mmio devices.
	VirtioIRQBase = 5
	// MaxIRQ is the highest IOAPIC pin announced in the MP table.
	MaxIRQ = 23
	// MaxVirtioDevices bounds the virtio-mmio slots: IRQs 5 to 20.
	MaxVirtioDevices = 16
	// GEDIRQ is the ACPI generic event device's GSI (with ACPI only): its
	// interrupt tells the guest that the VM generation ID changed.
	GEDIRQ = VirtioIRQBase + MaxVirtioDevices
)

// LowRAM is how much of size bytes of guest RAM sits below the 32-bit MMIO
// hole; the rest is placed above 4 GiB.
func LowRAM(size uint64) uint64 { return min(size, MMIOHoleStart) }
