// Package testimg builds small synthetic boot images for tests: a bzImage
// with a valid 64-bit setup header, ELF64 executables with chosen segments,
// and newc cpio archives (initramfs images, cpio.go).
package testimg

import (
	"encoding/binary"
)

// BzImage builds a minimal image with a valid 64-bit setup header: one
// setup sector, then payload bytes. Fields follow Documentation/arch/x86/boot.rst.
func BzImage(payload int) []byte {
	b := make([]byte, 2*512+payload)
	le := binary.LittleEndian
	b[0x1f1] = 1
	le.PutUint32(b[0x1f4:], uint32((payload+15)/16)) // syssize
	le.PutUint16(b[0x1fe:], 0xaa55)
	b[0x200] = 0xeb
	b[0x200+1] = 0x6a // header ends at 0x26c
	le.PutUint32(b[0x202:], 0x53726448)
	le.PutUint16(b[0x206:], 0x020f)
	b[0x211] = 0x01
	le.PutUint32(b[0x22c:], 0x7fffffff)
	le.PutUint32(b[0x230:], 0x200000)
	b[0x234] = 1
	le.PutUint16(b[0x236:], 0x01)
	le.PutUint32(b[0x238:], 2047)
	le.PutUint32(b[0x260:], 4<<20)
	return b
}

// Seg is one PT_LOAD segment.
type Seg struct {
	Paddr, Memsz uint64
	Data         []byte
}

// ELF builds an ELF64 x86-64 executable with the given PT_LOAD segments.
func ELF(entry uint64, segs ...Seg) []byte {
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
		le.PutUint64(ph[16:], s.Paddr)
		le.PutUint64(ph[24:], s.Paddr)
		le.PutUint64(ph[32:], uint64(len(s.Data)))
		le.PutUint64(ph[40:], s.Memsz)
		b = append(b, s.Data...)
		off += uint64(len(s.Data))
	}
	return b
}
