package kimage

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

func gz(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

const config = "# Automatically generated file; DO NOT EDIT.\n# Linux/x86 6.12.0 Kernel Configuration\nCONFIG_ACPI=y\nCONFIG_VIRTIO_MMIO=m\n# CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES is not set\n"

// bzImage is a minimal image: one setup sector, the header with its
// kernel_version pointer, and a payload.
func bzImage(version string, payload []byte) []byte {
	b := make([]byte, 0x800)
	le := binary.LittleEndian
	b[ofsSetupSects] = 1
	le.PutUint32(b[ofsHeader:], hdrSMagic)
	le.PutUint16(b[ofsKernelVer:], 0x300-0x200)
	copy(b[0x300:], version+"\x00")
	le.PutUint32(b[ofsPayloadOff:], 0)
	le.PutUint32(b[ofsPayloadLen:], uint32(len(payload)))
	return append(b[:0x400], payload...)
}

func write(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRead(t *testing.T) {
	dir := t.TempDir()
	kernel := append(append([]byte("...code...IKCFG_ST"), gz(t, []byte(config))...), "IKCFG_ED..."...)
	ik := write(t, dir, "ik.bz", bzImage("6.12.0-test (me@host) #1 SMP", gz(t, kernel)))
	i, err := Read(ik)
	if err != nil {
		t.Fatal(err)
	}
	if i.Format != "bzImage" || i.Release != "6.12.0-test" || i.Compression != "gzip" || i.ConfigFrom != "IKCONFIG" ||
		i.Option("CONFIG_ACPI") != "y" || i.Option("CONFIG_VIRTIO_MMIO") != "m" || i.Option("CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES") != "n" {
		t.Errorf("IKCONFIG image: %+v", i)
	}

	// An xz payload is not opened; the distribution's config-RELEASE
	// beside it is read instead.
	d2 := t.TempDir()
	xz := write(t, d2, "vmlinuz-6.1.0-9-amd64", bzImage("6.1.0-9-amd64 (debian@lists) #1", []byte("\xfd7zXZ\x00rest")))
	if i, err := Read(xz); err != nil || i.Compression != "xz" || i.Config != nil || i.Option("CONFIG_ACPI") != "" {
		t.Errorf("xz image without config: %+v, %v", i, err)
	}
	write(t, d2, "config-6.1.0-9-amd64", []byte(config))
	if i, err := Read(xz); err != nil || i.ConfigFrom != filepath.Join(d2, "config-6.1.0-9-amd64") || i.Option("CONFIG_ACPI") != "y" {
		t.Errorf("xz image with config-RELEASE: %+v, %v", i, err)
	}

	// An ELF vmlinux: the banner, and IKCONFIG read as it lies.
	elf := write(t, dir, "vmlinux", append([]byte("\x7fELF......Linux version %s (%s)\x00....Linux version 6.12.117-microvm (microvm@microvm) #1 SMP\n"), kernel...))
	if i, err := Read(elf); err != nil || i.Format != "ELF" || i.Release != "6.12.117-microvm" || i.ConfigFrom != "IKCONFIG" {
		t.Errorf("ELF: %+v, %v", i, err)
	}

	for name, b := range map[string][]byte{
		"text":       []byte("not a kernel"),
		"no release": bzImage("", nil),
	} {
		if _, err := Read(write(t, dir, name, b)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestRelease: the cheap path gives the same release as Read, for a
// bzImage and for an ELF whose banner lies beyond the first chunks.
func TestRelease(t *testing.T) {
	dir := t.TempDir()
	bz := write(t, dir, "bz", bzImage("6.12.0-test (me@host) #1 SMP", []byte("\x1f\x8bjunk")))
	pad := bytes.Repeat([]byte{0xaa}, 200<<10-7) // the banner straddles a chunk boundary
	elf := write(t, dir, "elf", append(append([]byte("\x7fELF"), pad...), "Linux version 6.12.117-microvm (microvm@microvm) #1\n"...))
	for _, c := range []struct{ path, want string }{{bz, "6.12.0-test"}, {elf, "6.12.117-microvm"}} {
		if got, err := Release(c.path); err != nil || got != c.want {
			t.Errorf("Release(%s) = %q, %v; want %q", c.path, got, err, c.want)
		}
	}
	if _, err := Release(write(t, dir, "noban", []byte("\x7fELF no banner here"))); err == nil {
		t.Error("an ELF without a banner has a release")
	}
}

// elfWithRodata is a minimal ELF64 whose .rodata section (found through
// the section headers) holds rodata, after filler bytes.
func elfWithRodata(filler, rodata []byte) []byte {
	le := binary.LittleEndian
	shstr := []byte("\x00.rodata\x00.shstrtab\x00")
	rodataOff := 64 + len(filler)
	shstrOff := rodataOff + len(rodata)
	shoff := shstrOff + len(shstr)
	b := make([]byte, 64)
	copy(b, "\x7fELF\x02\x01\x01")
	le.PutUint16(b[16:], 2)  // ET_EXEC
	le.PutUint16(b[18:], 62) // EM_X86_64
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[40:], uint64(shoff))
	le.PutUint16(b[52:], 64) // e_ehsize
	le.PutUint16(b[54:], 56) // e_phentsize
	le.PutUint16(b[58:], 64) // e_shentsize
	le.PutUint16(b[60:], 3)  // e_shnum
	le.PutUint16(b[62:], 2)  // e_shstrndx
	b = append(append(append(b, filler...), rodata...), shstr...)
	sh := func(name, typ uint32, flags uint64, off, size int) []byte {
		s := make([]byte, 64)
		le.PutUint32(s[0:], name)
		le.PutUint32(s[4:], typ)
		le.PutUint64(s[8:], flags)
		le.PutUint64(s[24:], uint64(off))
		le.PutUint64(s[32:], uint64(size))
		le.PutUint64(s[48:], 1)
		return s
	}
	b = append(b, make([]byte, 64)...)                    // SHN_UNDEF
	b = append(b, sh(1, 1, 2, rodataOff, len(rodata))...) // .rodata: PROGBITS, ALLOC
	b = append(b, sh(9, 3, 0, shstrOff, len(shstr))...)   // .shstrtab: STRTAB
	return b
}

// TestReleaseFromRodata: for an ELF with section headers the banner is
// looked for in .rodata first (where linux_banner is), not from the
// file's start: a banner-like string before it is not taken.
func TestReleaseFromRodata(t *testing.T) {
	dir := t.TempDir()
	filler := append([]byte("Linux version 0.0-decoy (x@y) #1\n"), bytes.Repeat([]byte{0xaa}, 300<<10)...)
	p := write(t, dir, "vmlinux", elfWithRodata(filler, []byte("Linux version 6.12.118-microvm (microvm@microvm) #1 SMP\x00")))
	if got, err := Release(p); err != nil || got != "6.12.118-microvm" {
		t.Errorf("Release = %q, %v; want 6.12.118-microvm from .rodata", got, err)
	}
	// Without the banner in .rodata, the whole file is scanned.
	p = write(t, dir, "norodata", elfWithRodata(filler, []byte("nothing here")))
	if got, err := Release(p); err != nil || got != "0.0-decoy" {
		t.Errorf("Release = %q, %v; want the whole-file scan's 0.0-decoy", got, err)
	}
}
