package vmm

import (
	"encoding/binary"
)

// fakeBzImage builds a minimal image with a valid 64-bit setup header: one
// setup sector, then payload bytes. Fields follow Documentation/arch/x86/boot.rst.
func fakeBzImage(payload int) []byte {
	b := make([]byte, 2*512+payload)
	le := binary.LittleEndian
	b[bpSetupSects] = 1
	le.PutUint32(b[0x1f4:], uint32((payload+15)/16)) // syssize
	le.PutUint16(b[bpBootFlag:], bootFlagMagic)
	b[bpJump] = 0xeb
	b[bpJump+1] = 0x6a // header ends at 0x26c
	le.PutUint32(b[bpHeader:], hdrSMagic)
	le.PutUint16(b[bpVersion:], 0x020f)
	b[bpLoadflags] = loadedHigh
	le.PutUint32(b[bpInitrdAddrMax:], 0x7fffffff)
	le.PutUint32(b[bpKernelAlignment:], 0x200000)
	b[bpRelocatable] = 1
	le.PutUint16(b[bpXLoadflags:], xlfKernel64)
	le.PutUint32(b[bpCmdlineSize:], 2047)
	le.PutUint32(b[bpInitSize:], 4*MiB)
	return b
}

type fakeSeg struct {
	paddr, memsz uint64
	data         []byte
}

// fakeELF builds an ELF64 x86-64 executable with the given PT_LOAD segments.
func fakeELF(entry uint64, segs ...fakeSeg) []byte {
	le := binary.LittleEndian
	const ehsize, phentsize = 64, 56
	off := uint64(ehsize + phentsize*len(segs))
	b := make([]byte, off)
	copy(b, "\x7fELF")
	b[4], b[5], b[6] = 2, 1, 1 // ELFCLASS64, little endian, version
	le.PutUint16(b[16:], 2)    // ET_EXEC
	le.PutUint16(b[18:], 62)   // EM_X86_64
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[24:], entry)
	le.PutUint64(b[32:], ehsize) // phoff
	le.PutUint16(b[52:], ehsize)
	le.PutUint16(b[54:], phentsize)
	le.PutUint16(b[56:], uint16(len(segs)))
	for i, s := range segs {
		ph := b[ehsize+i*phentsize:]
		le.PutUint32(ph[0:], 1) // PT_LOAD
		le.PutUint32(ph[4:], 5)
		le.PutUint64(ph[8:], off)
		le.PutUint64(ph[16:], s.paddr)
		le.PutUint64(ph[24:], s.paddr)
		le.PutUint64(ph[32:], uint64(len(s.data)))
		le.PutUint64(ph[40:], s.memsz)
		b = append(b, s.data...)
		off += uint64(len(s.data))
	}
	return b
}
