package boot

import "encoding/binary"

// struct boot_params ("zero page") offsets, from the kernel's
// Documentation/arch/x86/zero-page.rst and Documentation/arch/x86/boot.rst.
const (
	bpACPIRSDPAddr    = 0x070 // boot protocol 2.14+ (zero-page.rst: acpi_rsdp_addr)
	bpExtRamdiskImage = 0x0c0
	bpExtRamdiskSize  = 0x0c4
	bpExtCmdLinePtr   = 0x0c8
	bpE820Entries     = 0x1e8
	bpSetupHeader     = 0x1f1 // struct setup_header starts here
	bpSetupSects      = 0x1f1
	bpVidMode         = 0x1fa
	bpBootFlag        = 0x1fe
	bpJump            = 0x200
	bpHeader          = 0x202
	bpVersion         = 0x206
	bpTypeOfLoader    = 0x210
	bpLoadflags       = 0x211
	bpCode32Start     = 0x214
	bpRamdiskImage    = 0x218
	bpRamdiskSize     = 0x21c
	bpHeapEndPtr      = 0x224
	bpCmdLinePtr      = 0x228
	bpInitrdAddrMax   = 0x22c
	bpKernelAlignment = 0x230
	bpRelocatable     = 0x234
	bpXLoadflags      = 0x236
	bpCmdlineSize     = 0x238
	bpPrefAddress     = 0x258
	bpInitSize        = 0x260
	bpE820Table       = 0x2d0
	e820MaxEntries    = 128
	e820EntrySize     = 20

	bootFlagMagic = 0xaa55
	hdrSMagic     = 0x53726448 // "HdrS"

	loadedHigh    = 0x01
	canUseHeap    = 0x80
	xlfKernel64   = 0x01
	xlfAbove4G    = 0x02
	loaderUnknown = 0xff // type_of_loader for an unregistered boot loader
)

// BootParams is a 4 KiB zero page being filled in.
type BootParams [4096]byte

func (b *BootParams) put8(off int, v uint8)   { b[off] = v }
func (b *BootParams) put16(off int, v uint16) { binary.LittleEndian.PutUint16(b[off:], v) }
func (b *BootParams) put32(off int, v uint32) { binary.LittleEndian.PutUint32(b[off:], v) }
func (b *BootParams) get32(off int) uint32    { return binary.LittleEndian.Uint32(b[off:]) }

// SetCmdline records the command line's address and size.
func (b *BootParams) SetCmdline(addr uint64) {
	b.put32(bpCmdLinePtr, uint32(addr))
	b.put32(bpExtCmdLinePtr, uint32(addr>>32))
}

// SetRamdisk records the initrd's address and size (ext_* carry the high bits).
func (b *BootParams) SetRamdisk(addr, size uint64) {
	b.put32(bpRamdiskImage, uint32(addr))
	b.put32(bpRamdiskSize, uint32(size))
	b.put32(bpExtRamdiskImage, uint32(addr>>32))
	b.put32(bpExtRamdiskSize, uint32(size>>32))
}

// SetACPIRSDP tells the kernel where the ACPI RSDP is, so it needs no
// scan of the BIOS area (Documentation/arch/x86/zero-page.rst,
// acpi_rsdp_addr; read by kernels since 4.20, boot protocol 2.14).
func (b *BootParams) SetACPIRSDP(addr uint64) {
	binary.LittleEndian.PutUint64(b[bpACPIRSDPAddr:], addr)
}

// SetE820 writes the memory map; entries beyond the table's 128 are dropped.
func (b *BootParams) SetE820(entries []E820Entry) {
	if len(entries) > e820MaxEntries {
		entries = entries[:e820MaxEntries]
	}
	b.put8(bpE820Entries, uint8(len(entries)))
	for i, e := range entries {
		off := bpE820Table + i*e820EntrySize
		binary.LittleEndian.PutUint64(b[off:], e.Addr)
		binary.LittleEndian.PutUint64(b[off+8:], e.Size)
		b.put32(off+16, e.Type)
	}
}

// setLoader marks us as an unregistered boot loader with no video mode change.
func (b *BootParams) setLoader() {
	b.put8(bpTypeOfLoader, loaderUnknown)
	b.put16(bpVidMode, 0xffff) // "normal": don't ask
	b.put8(bpLoadflags, b[bpLoadflags]|canUseHeap)
	b.put16(bpHeapEndPtr, 0xfe00)
}

// newELFBootParams builds a zero page for a kernel that has no setup header of
// its own (ELF vmlinux or a micro-guest): just enough of the header for the
// 64-bit entry path to accept it.
func newELFBootParams() *BootParams {
	b := &BootParams{}
	b.put16(bpBootFlag, bootFlagMagic)
	b.put32(bpHeader, hdrSMagic)
	b.put16(bpVersion, 0x020f)
	b.put32(bpKernelAlignment, 0x1000000)
	b.put8(bpLoadflags, loadedHigh)
	b.setLoader()
	return b
}
