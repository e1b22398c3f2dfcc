package kimage

import (
	"bytes"
	"strings"
	"testing"
)

func TestInitrdFormat(t *testing.T) {
	ext2 := make([]byte, 2048)
	ext2[1024+56], ext2[1024+57] = 0x53, 0xef
	for _, c := range []struct {
		name, data, want, err string
	}{
		{"newc cpio", "070701000000", "cpio archive", ""},
		{"newc cpio with crc", "070702000000", "cpio archive", ""},
		{"padding, then microcode cpio", "\x00\x00\x00\x00070701", "cpio archive", ""},
		{"gzip", "\x1f\x8b\x08\x00", "gzip-compressed initramfs", ""},
		{"zstd", "\x28\xb5\x2f\xfd\x00", "zstd-compressed initramfs", ""},
		{"xz", "\xfd7zXZ\x00\x00", "xz-compressed initramfs", ""},
		{"lz4 legacy", "\x02\x21\x4c\x18", "lz4-compressed initramfs", ""},
		{"romfs", "-rom1fs-\x00", "romfs image", ""},
		{"squashfs", "hsqs\x00\x00", "squashfs image", ""},
		{"ext2", string(ext2), "ext2 image", ""},
		{"empty", "", "", "empty"},
		{"all zeros", "\x00\x00\x00\x00", "", "all zero bytes"},
		{"a text file", "root:x:0:0:root:/root:/bin/bash\n", "", "starts with 72 6f 6f 74"},
		{"an ELF", "\x7fELF\x02\x01\x01", "", "starts with 7f 45 4c 46"},
		{"odc cpio", "070707000000", "", "old-format (odc)"},
	} {
		got, err := InitrdFormat(strings.NewReader(c.data), int64(len(c.data)))
		switch {
		case c.err == "" && (err != nil || got != c.want):
			t.Errorf("%s: %q, %v; want %q", c.name, got, err, c.want)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%s: %q, %v; want an error with %q", c.name, got, err, c.err)
		}
	}
	// Zero bytes past the probe: the error says how far it looked.
	big := bytes.Repeat([]byte{0}, initrdProbe*2)
	if _, err := InitrdFormat(bytes.NewReader(big), int64(len(big))); err == nil || !strings.Contains(err.Error(), "first 64 KiB") {
		t.Errorf("zeros past the probe: %v", err)
	}
}
