package kimage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
)

// initrdProbe is how much of an initrd InitrdFormat reads: enough for NUL
// padding before the first archive and for an ext2 superblock.
const initrdProbe = 64 << 10

// InitrdFormat says what the initrd in r (size bytes) is, as the kernel
// would take it: an initramfs, a newc cpio archive, plain or compressed
// (init/initramfs.c, which skips NUL padding between archives), or an old
// style initrd filesystem image for /dev/ram0 (init/do_mounts_rd.c:
// romfs, cramfs, squashfs, ext2). Anything else would make the kernel
// boot without its init or panic much later, far from the cause; the
// error says what the file starts with instead.
func InitrdFormat(r io.ReaderAt, size int64) (string, error) {
	n := min(size, initrdProbe)
	b := make([]byte, n)
	if _, err := r.ReadAt(b, 0); err != nil && err != io.EOF {
		return "", err
	}
	if len(b) == 0 {
		return "", fmt.Errorf("empty: not an initramfs (cpio archive) or initrd image")
	}
	// Filesystem images first: their magic is at an offset, and a leading
	// zero block is theirs, not padding.
	le := binary.LittleEndian
	switch {
	case bytes.HasPrefix(b, []byte("-rom1fs-")):
		return "romfs image", nil
	case len(b) >= 4 && le.Uint32(b) == 0x28cd3d45, len(b) >= 516 && le.Uint32(b[512:]) == 0x28cd3d45:
		return "cramfs image", nil
	case bytes.HasPrefix(b, []byte("hsqs")):
		return "squashfs image", nil
	case len(b) >= 1024+58 && le.Uint16(b[1024+56:]) == 0xef53:
		return "ext2 image", nil
	}
	p := bytes.TrimLeft(b, "\x00")
	switch {
	case len(p) == 0 && int64(len(b)) == size:
		return "", fmt.Errorf("all zero bytes: not an initramfs (cpio archive) or initrd image")
	case len(p) == 0:
		return "", fmt.Errorf("its first %d KiB are zero bytes: not an initramfs (cpio archive) or initrd image", len(b)>>10)
	case bytes.HasPrefix(p, []byte("070701")), bytes.HasPrefix(p, []byte("070702")):
		return "cpio archive", nil
	case bytes.HasPrefix(p, []byte("070707")):
		return "", fmt.Errorf("an old-format (odc) cpio archive: the kernel takes only newc (cpio -H newc)")
	}
	if c := compression(p); c != "" {
		return c + "-compressed initramfs", nil
	}
	head := p[:min(len(p), 8)]
	return "", fmt.Errorf("starts with % x: not an initramfs (newc cpio archive, plain or compressed) or initrd image", head)
}
