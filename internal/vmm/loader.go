package vmm

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"

	"golang.org/x/sys/unix"
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

	path     string
	setup    []byte // bzImage: setup header bytes copied into the zero page
	segments []segment
	file     *os.File // set by OpenKernel; Load reads from it
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

// maxSetupBytes covers the largest real-mode setup a bzImage can declare
// (setup_sects is a byte: 255 sectors plus the boot sector).
const maxSetupBytes = 256 * 512

// OpenKernel opens and validates the kernel image at path without reading
// all of it; Load then reads it into guest memory. Close releases the file.
func OpenKernel(path string) (*Kernel, error) {
	f, size, err := openInput("--kernel", path)
	if err != nil {
		return nil, err
	}
	head := make([]byte, min(size, maxSetupBytes))
	if _, err := f.ReadAt(head, 0); err != nil {
		f.Close()
		return nil, inputErr("--kernel", "%s: cannot read: %v", path, err)
	}
	k, err := parseKernel(path, head, f, size)
	if err != nil {
		f.Close()
		return nil, &InputError{What: "--kernel", Msg: err.Error()}
	}
	k.file = f
	return k, nil
}

// Close releases the image file, if any.
func (k *Kernel) Close() {
	if k.file != nil {
		k.file.Close()
		k.file = nil
	}
}

// openInput opens a regular input file, with errors that name the flag.
func openInput(what, path string) (*os.File, int64, error) {
	st, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, 0, inputErr(what, "%s: no such file", path)
		}
		return nil, 0, inputErr(what, "%s: %v", path, errors.Unwrap(err))
	}
	if st.IsDir() {
		return nil, 0, inputErr(what, "%s is a directory, not a file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, inputErr(what, "%s: cannot read: %v", path, errors.Unwrap(err))
	}
	if st.Mode().IsRegular() {
		return f, st.Size(), nil
	}
	// A pipe or FIFO (--kernel <(curl ...)) has no size and no ReadAt:
	// take it into an anonymous memory file first.
	defer f.Close()
	fd, err := unix.MemfdCreate("microvm-input", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, 0, fmt.Errorf("%s %s: memfd_create: %w", what, path, err)
	}
	mf := os.NewFile(uintptr(fd), path)
	n, err := io.Copy(mf, io.LimitReader(f, maxStreamInput+1))
	switch {
	case err != nil:
		mf.Close()
		return nil, 0, inputErr(what, "%s: cannot read: %v", path, err)
	case n > maxStreamInput:
		mf.Close()
		return nil, 0, inputErr(what, "%s: a stream over %d GiB", path, maxStreamInput>>30)
	}
	return mf, n, nil
}

// maxStreamInput bounds a kernel or initrd read from a pipe.
const maxStreamInput = 4 << 30

// ParseKernel validates a bzImage or ELF64 image. path is used in errors only.
func ParseKernel(path string, b []byte) (*Kernel, error) {
	return parseKernel(path, b, bytes.NewReader(b), int64(len(b)))
}

// parseKernel validates the image of size bytes readable from r, whose first
// bytes (at least the bzImage setup, if there is one) are head.
func parseKernel(path string, head []byte, r io.ReaderAt, size int64) (*Kernel, error) {
	b := head
	switch {
	case len(b) == 0:
		return nil, inputErr(path, "kernel image is empty")
	case bytes.HasPrefix(b, []byte(elf.ELFMAG)):
		return parseELF(path, b, r, size)
	case len(b) >= bpHeader+4 && binary.LittleEndian.Uint32(b[bpHeader:]) == hdrSMagic:
		return parseBzImage(path, b, r, size)
	case len(b) < bpHeader+4 && len(b) > bpBootFlag+1 && binary.LittleEndian.Uint16(b[bpBootFlag:]) == bootFlagMagic:
		return nil, inputErr(path, "truncated bzImage (%d bytes, setup header incomplete)", len(b))
	}
	return nil, inputErr(path, "not a bootable kernel: neither a bzImage (no HdrS setup header) nor an ELF64 image")
}

// parseBzImage checks the setup header per Documentation/arch/x86/boot.rst for
// the 64-bit boot protocol: protocol >= 2.12 (xloadflags exists), XLF_KERNEL_64.
func parseBzImage(path string, b []byte, r io.ReaderAt, size int64) (*Kernel, error) {
	if len(b) < bpInitSize+4 {
		return nil, inputErr(path, "truncated bzImage (%d bytes, setup header incomplete)", len(b))
	}
	le := binary.LittleEndian
	if le.Uint16(b[bpBootFlag:]) != bootFlagMagic {
		return nil, inputErr(path, "bad bzImage: boot_flag is %#x, want 0xaa55", le.Uint16(b[bpBootFlag:]))
	}
	ver := le.Uint16(b[bpVersion:])
	if ver < 0x020c {
		return nil, inputErr(path, "boot protocol %d.%02d is too old: the 64-bit entry needs 2.12 or later", ver>>8, ver&0xff)
	}
	if le.Uint16(b[bpXLoadflags:])&xlfKernel64 == 0 {
		return nil, inputErr(path, "bzImage has no 64-bit entry point (XLF_KERNEL_64 not set): build it for x86_64")
	}
	if b[bpLoadflags]&loadedHigh == 0 {
		return nil, inputErr(path, "bzImage is not loaded high (zImage); only bzImage is supported")
	}
	setupSects := int(b[bpSetupSects])
	if setupSects == 0 {
		setupSects = 4
	}
	payloadOff := (setupSects + 1) * 512
	syssize := uint64(le.Uint32(b[0x1f4:])) * 16
	if uint64(size) < uint64(payloadOff)+syssize || int64(payloadOff) >= size {
		return nil, inputErr(path, "truncated bzImage: %d bytes, header says %d", size, uint64(payloadOff)+syssize)
	}
	// The setup header ends at 0x202 + the byte at 0x201 (the jump offset).
	hdrEnd := bpHeader + int(b[bpJump+1])
	if hdrEnd > len(b) || hdrEnd > len(BootParams{}) || hdrEnd < bpInitSize+4 {
		return nil, inputErr(path, "bad bzImage: setup header length %d is invalid", hdrEnd-bpSetupHeader)
	}
	initSize := uint64(le.Uint32(b[bpInitSize:]))
	payloadSize := uint64(size) - uint64(payloadOff)
	if initSize < payloadSize {
		initSize = payloadSize
	}
	k := &Kernel{
		Format:        "bzImage",
		Entry:         KernelLoadAddr + 0x200, // startup_64
		End:           KernelLoadAddr + initSize,
		CmdlineMax:    int(le.Uint32(b[bpCmdlineSize:])),
		InitrdAddrMax: uint64(le.Uint32(b[bpInitrdAddrMax:])),
		path:          path,
		setup:         b[bpSetupHeader:hdrEnd],
		segments:      []segment{{paddr: KernelLoadAddr, src: r, off: int64(payloadOff), filesz: payloadSize, memsz: payloadSize}},
	}
	if b[bpXLoadflags]&xlfAbove4G != 0 {
		k.InitrdAddrMax = 1<<64 - 1
	}
	if k.CmdlineMax <= 0 || k.CmdlineMax > CmdlineMax-1 {
		k.CmdlineMax = CmdlineMax - 1
	}
	return k, nil
}

// parseELF accepts a 64-bit x86 ELF (vmlinux or a micro-guest) whose PT_LOAD
// segments sit at physical addresses at or above 1 MiB and do not overlap.
func parseELF(path string, b []byte, r io.ReaderAt, size int64) (*Kernel, error) {
	if len(b) < 5 {
		return nil, inputErr(path, "truncated ELF header")
	}
	if elf.Class(b[elf.EI_CLASS]) == elf.ELFCLASS32 {
		return nil, inputErr(path, "32-bit ELF kernels are not supported: need an ELF64 x86-64 image")
	}
	f, err := elf.NewFile(io.NewSectionReader(r, 0, size))
	if err != nil {
		return nil, inputErr(path, "bad ELF: %v", err)
	}
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 {
		return nil, inputErr(path, "ELF is %v %v: need ELF64 x86-64", f.Class, f.Machine)
	}
	k := &Kernel{
		Format:        "ELF",
		Entry:         f.Entry,
		CmdlineMax:    4095,
		InitrdAddrMax: 1<<64 - 1,
		path:          path,
	}
	for i, p := range f.Progs {
		if p.Type != elf.PT_LOAD || p.Memsz == 0 {
			continue
		}
		if p.Filesz > p.Memsz {
			return nil, inputErr(path, "ELF segment %d: file size %d exceeds memory size %d", i, p.Filesz, p.Memsz)
		}
		if p.Off > uint64(size) || p.Filesz > uint64(size)-p.Off {
			return nil, inputErr(path, "truncated ELF: segment %d extends past the end of the file", i)
		}
		end := p.Paddr + p.Memsz
		if end < p.Paddr || end > MaxMemory {
			return nil, inputErr(path, "ELF segment %d at %#x (+%#x) is out of range", i, p.Paddr, p.Memsz)
		}
		if p.Paddr < HighMemStart {
			return nil, inputErr(path, "ELF segment %d at %#x is below 1 MiB, where the boot structures live", i, p.Paddr)
		}
		k.segments = append(k.segments, segment{paddr: p.Paddr, src: r, off: int64(p.Off), filesz: p.Filesz, memsz: p.Memsz})
		k.End = max(k.End, end)
	}
	if len(k.segments) == 0 {
		return nil, inputErr(path, "ELF has no loadable segments")
	}
	sort.Slice(k.segments, func(i, j int) bool { return k.segments[i].paddr < k.segments[j].paddr })
	for i := 1; i < len(k.segments); i++ {
		prev, cur := k.segments[i-1], k.segments[i]
		if prev.paddr+prev.memsz > cur.paddr {
			return nil, inputErr(path, "ELF segments at %#x and %#x overlap", prev.paddr, cur.paddr)
		}
	}
	inSeg := false
	for _, s := range k.segments {
		inSeg = inSeg || (k.Entry >= s.paddr && k.Entry < s.paddr+s.memsz)
	}
	if !inSeg {
		return nil, inputErr(path, "ELF entry point %#x is outside its loadable segments", k.Entry)
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

// CheckFits reports, as an error naming --memory, a kernel that does not fit
// in the low RAM of a guest with memSize bytes.
func (k *Kernel) CheckFits(memSize uint64) error {
	if low := RAMLayout(memSize)[0].Size; k.End > low {
		return inputErr("--memory", "%s needs %d MiB of low memory, guest has %d MiB", k.path, (k.End+MiB-1)/MiB, low/MiB)
	}
	return nil
}

// Load copies the kernel's segments into guest memory (after CheckFits).
func (k *Kernel) Load(mem *Memory) error {
	for _, s := range k.segments {
		dst, err := mem.Slice(s.paddr, s.memsz)
		if err != nil {
			return fmt.Errorf("load %s: segment at %#x: %w", k.path, s.paddr, err)
		}
		if _, err := s.src.ReadAt(dst[:s.filesz], s.off); err != nil {
			return fmt.Errorf("load %s: read segment at file offset %#x: %w", k.path, s.off, err)
		}
		clear(dst[s.filesz:])
	}
	return nil
}

// InitrdAddr picks where an initrd of size bytes goes: as high as possible in
// low RAM, under initrd_addr_max, page aligned, above the kernel.
func (k *Kernel) InitrdAddr(memSize, size uint64) (uint64, error) {
	top := RAMLayout(memSize)[0].Size
	if k.InitrdAddrMax < top-1 {
		top = k.InitrdAddrMax + 1
	}
	if size > top || (top-size)&^0xfff < k.End {
		return 0, fmt.Errorf("initrd of %d MiB does not fit in guest RAM below %#x (kernel ends at %#x, guest has %d MiB)",
			(size+MiB-1)/MiB, top, k.End, memSize/MiB)
	}
	return (top - size) &^ 0xfff, nil
}
