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
