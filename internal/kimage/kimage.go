// Package kimage reads what a kernel image says about itself without
// booting it: its release (the bzImage header's kernel_version string,
// Documentation/arch/x86/boot.rst; the "Linux version" banner of an ELF
// vmlinux) and its build configuration, from IKCONFIG inside the image
// (kernel/configs.c: the gzipped .config between "IKCFG_ST" and
// "IKCFG_ED") or from the config file a distribution or `make kernel`
// puts beside it.
package kimage

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Info is what an image says about itself.
type Info struct {
	Format  string // "bzImage" or "ELF"
	Release string // e.g. "6.1.0-57-cloud-amd64"
	Version string // the whole version string after the release
	// Compression of a bzImage's payload: gzip, xz, lz4, zstd, ...
	Compression string
	// Config holds the CONFIG_ options that are set (value y, m, a
	// number or a string); nil when no config was found.
	Config map[string]string
	// ConfigFrom says where Config came from: "IKCONFIG" or a path; or,
	// when nil, why none was read.
	ConfigFrom string
}

// Option returns a config option's value, "n" when the config does not
// set it, or "" when there is no config.
func (i *Info) Option(name string) string {
	if i.Config == nil {
		return ""
	}
	if v, ok := i.Config[name]; ok {
		return v
	}
	return "n"
}

const (
	hdrSMagic       = 0x53726448 // "HdrS" at 0x202
	ofsSetupSects   = 0x1f1
	ofsHeader       = 0x202
	ofsKernelVer    = 0x20e
	ofsPayloadOff   = 0x248
	ofsPayloadLen   = 0x24c
	maxImage        = 512 << 20
	maxConfigBytes  = 4 << 20
	maxDecompressed = 256 << 20
)

// Read inspects the kernel image at path.
func Read(path string) (*Info, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b) > maxImage {
		return nil, fmt.Errorf("%s: %d MiB is too large for a kernel image", path, len(b)>>20)
	}
	var info *Info
	var payload []byte
	switch {
	case bytes.HasPrefix(b, []byte("\x7fELF")):
		info = &Info{Format: "ELF"}
		info.Release, info.Version = banner(b)
		payload = b
	case len(b) > ofsPayloadLen+4 && binary.LittleEndian.Uint32(b[ofsHeader:]) == hdrSMagic:
		info = &Info{Format: "bzImage"}
		if p := int(binary.LittleEndian.Uint16(b[ofsKernelVer:])); p != 0 && p+0x200 < len(b) {
			s := b[p+0x200:]
			if i := bytes.IndexByte(s, 0); i >= 0 {
				s = s[:i]
			}
			info.Release, info.Version, _ = strings.Cut(string(s), " ")
		}
		payload, info.Compression = bzPayload(b)
	default:
		return nil, fmt.Errorf("%s: not a kernel image (neither a bzImage nor an ELF vmlinux)", path)
	}
	if info.Release == "" {
		return nil, fmt.Errorf("%s: no kernel release string in the image", path)
	}
	info.readConfig(path, payload)
	return info, nil
}

// banner finds "Linux version RELEASE ..." in an uncompressed image.
func banner(b []byte) (release, version string) {
	const key = "Linux version "
	for off := 0; ; {
		i := bytes.Index(b[off:], []byte(key))
		if i < 0 {
			return "", ""
		}
		s := b[off+i+len(key):]
		if j := bytes.IndexAny(s, "\x00\n"); j >= 0 {
			s = s[:j]
		}
		// linux_banner is "Linux version %s (%s@%s) ...": the release
		// is a word followed by " (".
		if r, v, ok := strings.Cut(string(s), " "); ok && r != "" && !strings.Contains(r, "%") && strings.HasPrefix(v, "(") {
			return r, v
		}
		off += i + len(key)
	}
}

// bzPayload returns a bzImage's compressed kernel (payload_offset and
// payload_length, protocol 2.08+) and what compressed it, by its magic.
func bzPayload(b []byte) ([]byte, string) {
	le := binary.LittleEndian
	sects := int(b[ofsSetupSects])
	if sects == 0 {
		sects = 4
	}
	start := (sects+1)*512 + int(le.Uint32(b[ofsPayloadOff:]))
	n := int(le.Uint32(b[ofsPayloadLen:]))
	if start < 0 || n <= 0 || start > len(b) || n > len(b)-start {
		return nil, ""
	}
	p := b[start : start+n]
	if c := compression(p); c != "" {
		return p, c
	}
	return p, "unknown"
}

// compression names the compressor of p by its magic: those the kernel's
// decompressors know (lib/decompress.c), for a kernel payload or an
// initramfs alike; "" if none.
func compression(p []byte) string {
	for _, m := range []struct {
		magic, name string
	}{
		{"\x1f\x8b", "gzip"}, {"\x1f\x9e", "gzip"}, {"\xfd7zXZ\x00", "xz"}, {"\x02\x21\x4c\x18", "lz4"},
		{"\x28\xb5\x2f\xfd", "zstd"}, {"BZh", "bzip2"}, {"\x5d\x00\x00", "lzma"}, {"\x89LZO", "lzo"},
	} {
		if bytes.HasPrefix(p, []byte(m.magic)) {
			return m.name
		}
	}
	return ""
}

// readConfig takes IKCONFIG from the image if there is one, else a config
// file beside it: config-RELEASE (a distribution's /boot) or config
// (`make kernel`'s cache entry, scripts/stock-kernel.sh's directory).
func (i *Info) readConfig(path string, payload []byte) {
	why := "no IKCONFIG in the image"
	switch {
	case i.Format == "ELF":
	case i.Compression == "gzip":
		if r, err := gzip.NewReader(bytes.NewReader(payload)); err == nil {
			r.Multistream(false)
			if raw, err := io.ReadAll(io.LimitReader(r, maxDecompressed)); err == nil {
				payload = raw
			}
		}
	default:
		why = fmt.Sprintf("IKCONFIG not looked for in a %s-compressed image", i.Compression)
		payload = nil
	}
	if cfg := ikconfig(payload); cfg != nil {
		i.Config, i.ConfigFrom = cfg, "IKCONFIG"
		return
	}
	if cfg, from := configBeside(path, i.Release); cfg != nil {
		i.Config, i.ConfigFrom = cfg, from
		return
	}
	i.ConfigFrom = why + ", and no config-" + i.Release + " or config beside it"
}

// ConfigBeside returns the config file beside the image at path (nil if
// none): config-RELEASE (a distribution's /boot) or config (`make
// kernel`'s cache entry, scripts/stock-kernel.sh's directory), beside the
// file a symlink points at.
func ConfigBeside(path, release string) map[string]string {
	cfg, _ := configBeside(path, release)
	return cfg
}

func configBeside(path, release string) (map[string]string, string) {
	dir := filepath.Dir(path)
	if real, err := filepath.EvalSymlinks(path); err == nil {
		dir = filepath.Dir(real)
	}
	for _, name := range []string{"config-" + release, "config"} {
		p := filepath.Join(dir, name)
		if cfg, err := parseConfigFile(p); err == nil {
			return cfg, p
		}
	}
	return nil, ""
}

// ikconfig extracts the configuration kernel/configs.c embeds.
func ikconfig(b []byte) map[string]string {
	st := bytes.Index(b, []byte("IKCFG_ST"))
	if st < 0 {
		return nil
	}
	r, err := gzip.NewReader(bytes.NewReader(b[st+8:]))
	if err != nil {
		return nil
	}
	r.Multistream(false)
	raw, err := io.ReadAll(io.LimitReader(r, maxConfigBytes))
	if err != nil {
		return nil
	}
	return parseConfig(raw)
}

func parseConfigFile(p string) (map[string]string, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxConfigBytes))
	if err != nil {
		return nil, err
	}
	if !bytes.Contains(raw, []byte("Kernel Configuration")) {
		return nil, errors.New("not a kernel config")
	}
	return parseConfig(raw), nil
}

// parseConfig reads CONFIG_X=value lines.
func parseConfig(raw []byte) map[string]string {
	cfg := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if ok && strings.HasPrefix(k, "CONFIG_") {
			cfg[k] = v
		}
	}
	return cfg
}

// Release reads only an image's release, cheaply: a bzImage's header, or
// an ELF read in small chunks up to its banner, so that a caller about to
// boot the image (microvm.NoACPIFor) keeps neither the image nor its
// decompressed kernel in its heap, whose peak RSS is measured.
func Release(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	head := make([]byte, 64<<10)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return "", err
	}
	head = head[:n]
	if len(head) > ofsPayloadLen+4 && binary.LittleEndian.Uint32(head[ofsHeader:]) == hdrSMagic {
		p := int(binary.LittleEndian.Uint16(head[ofsKernelVer:])) + 0x200
		if p < 0x200+1 || p >= len(head) {
			return "", fmt.Errorf("%s: no kernel_version in the bzImage header", path)
		}
		s := head[p:]
		if i := bytes.IndexByte(s, 0); i >= 0 {
			s = s[:i]
		}
		r, _, _ := strings.Cut(string(s), " ")
		return r, nil
	}
	if !bytes.HasPrefix(head, []byte("\x7fELF")) {
		return "", fmt.Errorf("%s: not a kernel image", path)
	}
	// linux_banner is read-only data: in .rodata, which a vmlinux's
	// section headers locate (8 MiB into the project's 15 MiB vmlinux,
	// the banner its first bytes), so the scan starts there. Scanning
	// from the start read 8 MiB, about 100 ms of every boot in the
	// nested harness. The whole file is the fallback.
	if r := rodataBanner(f); r != "" {
		return r, nil
	}
	if _, err := f.Seek(int64(len(head)), io.SeekStart); err != nil {
		return "", err
	}
	if r := scanBanner(f, head); r != "" {
		return r, nil
	}
	return "", fmt.Errorf("%s: no Linux banner in the image", path)
}

// rodataBanner is the release in an ELF's .rodata, or "". debug/elf does
// not promise to survive any input, and the file is the user's: a panic
// in it only means the whole-file scan decides.
func rodataBanner(f *os.File) (release string) {
	defer func() {
		if recover() != nil {
			release = ""
		}
	}()
	ef, err := elf.NewFile(f)
	if err != nil {
		return ""
	}
	s := ef.Section(".rodata")
	if s == nil || s.Type != elf.SHT_PROGBITS {
		return ""
	}
	return scanBanner(io.NewSectionReader(f, int64(s.Offset), int64(s.Size)), nil)
}

// scanBanner looks for the banner in head and then what r holds, in 64
// KiB chunks that overlap by a banner's length, so none is split unseen.
func scanBanner(r io.Reader, head []byte) string {
	const keep = 256
	buf := head
	var err error
	if buf == nil {
		buf = make([]byte, 64<<10)
		var n int
		n, err = io.ReadFull(r, buf)
		buf = buf[:n]
	}
	for {
		if rel, _ := banner(buf); rel != "" {
			return rel
		}
		if err != nil {
			return ""
		}
		tail := append([]byte(nil), buf[max(len(buf)-keep, 0):]...)
		buf = append(tail, make([]byte, 64<<10)...)
		var n int
		n, err = io.ReadFull(r, buf[len(tail):])
		buf = buf[:len(tail)+n]
	}
}
