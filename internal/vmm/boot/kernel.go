package boot

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"sort"

	"github.com/microvm-dev/microvm/internal/vmm/layout"
)

// Kernel is a parsed, validated kernel image ready to be placed in guest RAM.
type Kernel struct {
	Format string // "bzImage" or "ELF"
	Entry  uint64 // 64-bit entry point (guest-physical)
	// End is the first byte above everything the kernel needs (init_size
	// for a bzImage, the last segment for an ELF); the initrd goes above it.
	End uint64
	// CmdlineMax is the longest command line the kernel accepts, without NUL.
	CmdlineMax int
	// InitrdAddrMax is the highest address the initrd may occupy.
	InitrdAddrMax uint64

	Path     string // for messages
	setup    []byte // bzImage: setup header bytes copied into the zero page
	segments []segment
}

// segment is a part of the image that goes to paddr: filesz bytes read from
// src at off, then zeros up to memsz. Reading straight into guest memory
// keeps the image out of the VMM's heap (and its peak RSS).
type segment struct {
	paddr  uint64
	src    io.ReaderAt
	off    int64
	filesz uint64
	memsz  uint64
}

// MaxSetupBytes covers the largest real-mode setup a bzImage can declare
// (setup_sects is a byte: 255 sectors plus the boot sector): the head of the
// image ParseKernelAt needs.
const MaxSetupBytes = 256 * 512

// ParseKernel validates a bzImage or ELF64 image. path is used in errors only.
func ParseKernel(path string, b []byte) (*Kernel, error) {
	return ParseKernelAt(path, b, bytes.NewReader(b), int64(len(b)))
}

// ParseKernelAt validates the image of size bytes readable from r, whose first
// bytes (at least the bzImage setup, if there is one) are head.
func ParseKernelAt(path string, head []byte, r io.ReaderAt, size int64) (*Kernel, error) {
	b := head
	switch {
	case len(b) == 0:
		return nil, fmt.Errorf("%s: kernel image is empty", path)
	case bytes.HasPrefix(b, []byte(elf.ELFMAG)):
		return parseELF(path, b, r, size)
	case len(b) >= bpHeader+4 && binary.LittleEndian.Uint32(b[bpHeader:]) == hdrSMagic:
		return parseBzImage(path, b, r, size)
	case len(b) < bpHeader+4 && len(b) > bpBootFlag+1 && binary.LittleEndian.Uint16(b[bpBootFlag:]) == bootFlagMagic:
		return nil, fmt.Errorf("%s: truncated bzImage (%d bytes, setup header incomplete)", path, len(b))
	}
	return nil, fmt.Errorf("%s: not a bootable kernel: neither a bzImage (no HdrS setup header) nor an ELF64 image", path)
}

// parseBzImage checks the setup header per Documentation/arch/x86/boot.rst for
// the 64-bit boot protocol: protocol >= 2.12 (xloadflags exists), XLF_KERNEL_64.
func parseBzImage(path string, b []byte, r io.ReaderAt, size int64) (*Kernel, error) {
	if len(b) < bpInitSize+4 {
		return nil, fmt.Errorf("%s: truncated bzImage (%d bytes, setup header incomplete)", path, len(b))
	}
	le := binary.LittleEndian
	if le.Uint16(b[bpBootFlag:]) != bootFlagMagic {
		return nil, fmt.Errorf("%s: bad bzImage: boot_flag is %#x, want 0xaa55", path, le.Uint16(b[bpBootFlag:]))
	}
	ver := le.Uint16(b[bpVersion:])
	if ver < 0x020c {
		return nil, fmt.Errorf("%s: boot protocol %d.%02d is too old: the 64-bit entry needs 2.12 or later", path, ver>>8, ver&0xff)
	}
	if le.Uint16(b[bpXLoadflags:])&xlfKernel64 == 0 {
		return nil, fmt.Errorf("%s: bzImage has no 64-bit entry point (XLF_KERNEL_64 not set): build it for x86_64", path)
	}
	if b[bpLoadflags]&loadedHigh == 0 {
		return nil, fmt.Errorf("%s: bzImage is not loaded high (zImage); only bzImage is supported", path)
	}
	setupSects := int(b[bpSetupSects])
	if setupSects == 0 {
		setupSects = 4
	}
	payloadOff := (setupSects + 1) * 512
	syssize := uint64(le.Uint32(b[0x1f4:])) * 16
	if uint64(size) < uint64(payloadOff)+syssize || int64(payloadOff) >= size {
		return nil, fmt.Errorf("%s: truncated bzImage: %d bytes, header says %d", path, size, uint64(payloadOff)+syssize)
	}
	// The setup header ends at 0x202 + the byte at 0x201 (the jump offset).
	hdrEnd := bpHeader + int(b[bpJump+1])
	if hdrEnd > len(b) || hdrEnd > len(BootParams{}) || hdrEnd < bpInitSize+4 {
		return nil, fmt.Errorf("%s: bad bzImage: setup header length %d is invalid", path, hdrEnd-bpSetupHeader)
	}
	initSize := uint64(le.Uint32(b[bpInitSize:]))
	payloadSize := uint64(size) - uint64(payloadOff)
	if initSize < payloadSize {
		initSize = payloadSize
	}
	k := &Kernel{
		Format:        "bzImage",
		Entry:         layout.KernelLoadAddr + 0x200, // startup_64
		End:           layout.KernelLoadAddr + initSize,
		CmdlineMax:    int(le.Uint32(b[bpCmdlineSize:])),
		InitrdAddrMax: uint64(le.Uint32(b[bpInitrdAddrMax:])),
		Path:          path,
		setup:         b[bpSetupHeader:hdrEnd],
		segments:      []segment{{paddr: layout.KernelLoadAddr, src: r, off: int64(payloadOff), filesz: payloadSize, memsz: payloadSize}},
	}
	if b[bpXLoadflags]&xlfAbove4G != 0 {
		k.InitrdAddrMax = 1<<64 - 1
	}
	if k.CmdlineMax <= 0 || k.CmdlineMax > layout.CmdlineMax-1 {
		k.CmdlineMax = layout.CmdlineMax - 1
	}
	return k, nil
}

// parseELF accepts a 64-bit x86 ELF (vmlinux or a micro-guest) whose PT_LOAD
// segments sit at physical addresses at or above 1 MiB and do not overlap.
func parseELF(path string, b []byte, r io.ReaderAt, size int64) (*Kernel, error) {
	if len(b) < 5 {
		return nil, fmt.Errorf("%s: truncated ELF header", path)
	}
	if elf.Class(b[elf.EI_CLASS]) == elf.ELFCLASS32 {
		return nil, fmt.Errorf("%s: 32-bit ELF kernels are not supported: need an ELF64 x86-64 image", path)
	}
	f, err := elf.NewFile(io.NewSectionReader(r, 0, size))
	if err != nil {
		return nil, fmt.Errorf("%s: bad ELF: %v", path, err)
	}
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 {
		return nil, fmt.Errorf("%s: ELF is %v %v: need ELF64 x86-64", path, f.Class, f.Machine)
	}
	k := &Kernel{
		Format:        "ELF",
		Entry:         f.Entry,
		CmdlineMax:    4095,
		InitrdAddrMax: 1<<64 - 1,
		Path:          path,
	}
	for i, p := range f.Progs {
		if p.Type != elf.PT_LOAD || p.Memsz == 0 {
			continue
		}
		if p.Filesz > p.Memsz {
			return nil, fmt.Errorf("%s: ELF segment %d: file size %d exceeds memory size %d", path, i, p.Filesz, p.Memsz)
		}
		if p.Off > uint64(size) || p.Filesz > uint64(size)-p.Off {
			return nil, fmt.Errorf("%s: truncated ELF: segment %d extends past the end of the file", path, i)
		}
		end := p.Paddr + p.Memsz
		if end < p.Paddr || end > layout.MaxMemory {
			return nil, fmt.Errorf("%s: ELF segment %d at %#x (+%#x) is out of range", path, i, p.Paddr, p.Memsz)
		}
		if p.Paddr < layout.HighMemStart {
			return nil, fmt.Errorf("%s: ELF segment %d at %#x is below 1 MiB, where the boot structures live", path, i, p.Paddr)
		}
		k.segments = append(k.segments, segment{paddr: p.Paddr, src: r, off: int64(p.Off), filesz: p.Filesz, memsz: p.Memsz})
		k.End = max(k.End, end)
	}
	if len(k.segments) == 0 {
		return nil, fmt.Errorf("%s: ELF has no loadable segments", path)
	}
	sort.Slice(k.segments, func(i, j int) bool { return k.segments[i].paddr < k.segments[j].paddr })
	for i := 1; i < len(k.segments); i++ {
		prev, cur := k.segments[i-1], k.segments[i]
		if prev.paddr+prev.memsz > cur.paddr {
			return nil, fmt.Errorf("%s: ELF segments at %#x and %#x overlap", path, prev.paddr, cur.paddr)
		}
	}
	inSeg := false
	for _, s := range k.segments {
		inSeg = inSeg || (k.Entry >= s.paddr && k.Entry < s.paddr+s.memsz)
	}
	if !inSeg {
		return nil, fmt.Errorf("%s: ELF entry point %#x is outside its loadable segments", path, k.Entry)
	}
	return k, nil
}

// BootParams returns a fresh zero page for this kernel: the image's own setup
// header for a bzImage, a synthesized one for an ELF.
func (k *Kernel) BootParams() *BootParams {
	if k.setup == nil {
		return newELFBootParams()
	}
	bp := &BootParams{}
	copy(bp[bpSetupHeader:], k.setup)
	bp.setLoader()
	return bp
}

// CheckFits reports a kernel that does not fit
// in the low RAM of a guest with memSize bytes.
func (k *Kernel) CheckFits(memSize uint64) error {
	if low := layout.LowRAM(memSize); k.End > low {
		return fmt.Errorf("%s needs %d MiB of low memory, guest has %d MiB", k.Path, (k.End+layout.MiB-1)/layout.MiB, low/layout.MiB)
	}
	return nil
}

// Load reads the kernel's segments into guest memory (after CheckFits).
// mem must be fresh, zeroed RAM, as a new guest's is: a segment's bss (memsz
// beyond filesz) is left as it is instead of being cleared, which would
// fault in every one of its pages before the guest needs them.
func (k *Kernel) Load(mem Mem) error {
	for _, s := range k.segments {
		dst, err := mem.Slice(s.paddr, s.memsz)
		if err != nil {
			return fmt.Errorf("load %s: segment at %#x: %w", k.Path, s.paddr, err)
		}
		if _, err := s.src.ReadAt(dst[:s.filesz], s.off); err != nil {
			return fmt.Errorf("load %s: read segment at file offset %#x: %w", k.Path, s.off, err)
		}
	}
	return nil
}

// InitrdAddr picks where an initrd of size bytes goes: as high as possible in
// low RAM, under initrd_addr_max, page aligned, above the kernel.
func (k *Kernel) InitrdAddr(memSize, size uint64) (uint64, error) {
	top := layout.LowRAM(memSize)
	if k.InitrdAddrMax < top-1 {
		top = k.InitrdAddrMax + 1
	}
	if size > top || (top-size)&^0xfff < k.End {
		return 0, fmt.Errorf("initrd of %d MiB does not fit in guest RAM below %#x (kernel ends at %#x, guest has %d MiB)",
			(size+layout.MiB-1)/layout.MiB, top, k.End, memSize/layout.MiB)
	}
	return (top - size) &^ 0xfff, nil
}
