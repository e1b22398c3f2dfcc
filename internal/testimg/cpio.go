package testimg

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// CPIO writes a newc ("070701") cpio archive, the format the Linux kernel
// unpacks as an initramfs (Documentation/driver-api/early-userspace/
// buffer-format.rst). It creates missing parent directories itself, so
// callers can add files in any order. The first error sticks: later calls
// do nothing and Close returns it.
type CPIO struct {
	w    io.Writer
	off  int64
	ino  uint32
	dirs map[string]bool
	err  error
}

// NewCPIO returns a CPIO writing to w.
func NewCPIO(w io.Writer) *CPIO {
	return &CPIO{w: w, ino: 1, dirs: map[string]bool{"": true, ".": true, "/": true}}
}

// File types in a newc header's mode field.
const (
	ModeDir = 0o040000
	ModeReg = 0o100000
	ModeChr = 0o020000
	ModeLnk = 0o120000
)

const cpioTrailer = "TRAILER!!!"

// CPIOName is the name an archive member gets: "/a/b/" becomes "a/b", as
// the kernel wants names without a leading slash.
func CPIOName(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

func (c *CPIO) write(b []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(b)
	c.off += int64(n)
	c.err = err
}

func (c *CPIO) pad() {
	if r := c.off % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

func (c *CPIO) header(name string, mode uint32, size int64, rmaj, rmin uint32) {
	if size > 0xffffffff {
		c.err = fmt.Errorf("cpio: %s: %d bytes is too large for newc", name, size)
		return
	}
	nlink := uint32(1)
	if mode&0o170000 == ModeDir {
		nlink = 2
	}
	ino := c.ino
	c.ino++
	if name == cpioTrailer {
		ino, nlink = 0, 1
	}
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, mode, 0, 0, nlink, 0, uint32(size), 0, 0, rmaj, rmin, len(name)+1, 0)
	c.write([]byte(hdr))
	c.write(append([]byte(name), 0))
	c.pad()
}

// Dir adds a directory and its missing parents.
func (c *CPIO) Dir(name string, perm uint32) {
	name = CPIOName(name)
	if c.dirs[name] {
		return
	}
	c.Dir(path.Dir(name), 0o755)
	c.header(name, ModeDir|perm, 0, 0, 0)
	c.dirs[name] = true
}

// File adds a regular file with size bytes read from r.
func (c *CPIO) File(name string, perm uint32, size int64, r io.Reader) {
	name = CPIOName(name)
	c.Dir(path.Dir(name), 0o755)
	c.header(name, ModeReg|perm, size, 0, 0)
	if c.err != nil {
		return
	}
	n, err := io.CopyN(c.w, r, size)
	c.off += n
	if err != nil {
		c.err = fmt.Errorf("cpio: %s: %w", name, err)
		return
	}
	c.pad()
}

// Bytes adds a regular file holding data.
func (c *CPIO) Bytes(name string, perm uint32, data []byte) {
	c.File(name, perm, int64(len(data)), bytes.NewReader(data))
}

// CharDev adds a character device node.
func (c *CPIO) CharDev(name string, perm, major, minor uint32) {
	name = CPIOName(name)
	c.Dir(path.Dir(name), 0o755)
	c.header(name, ModeChr|perm, 0, major, minor)
}

// HostFile adds the host file or directory tree src as dest. Directories are
// copied recursively; symlinks are followed. Files with any execute bit get
// mode 0755, others 0644.
func (c *CPIO) HostFile(dest, src string) {
	if c.err != nil {
		return
	}
	fi, err := os.Stat(src)
	if err != nil {
		c.err = err
		return
	}
	if fi.IsDir() {
		c.Dir(dest, 0o755)
		ents, err := os.ReadDir(src)
		if err != nil {
			c.err = err
			return
		}
		sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
		for _, e := range ents {
			c.HostFile(path.Join(dest, e.Name()), filepath.Join(src, e.Name()))
		}
		return
	}
	if !fi.Mode().IsRegular() {
		c.err = fmt.Errorf("cpio: %s is not a regular file or directory", src)
		return
	}
	f, err := os.Open(src)
	if err != nil {
		c.err = err
		return
	}
	defer f.Close()
	perm := uint32(0o644)
	if fi.Mode()&0o111 != 0 {
		perm = 0o755
	}
	c.File(dest, perm, fi.Size(), f)
}

// Symlink adds a symbolic link to target.
func (c *CPIO) Symlink(name, target string) {
	name = CPIOName(name)
	c.Dir(path.Dir(name), 0o755)
	c.header(name, ModeLnk|0o777, int64(len(target)), 0, 0)
	c.write([]byte(target))
	c.pad()
}

// Tree adds the host directory tree src as dest the way a root filesystem
// needs it, unlike HostFile: symlinks stay symlinks (a Debian root's /bin
// is one, and following links could leave src), permission bits are kept
// (setuid, sticky /tmp), character devices are recreated, and sockets,
// fifos and block devices are left out. Hard links become copies.
func (c *CPIO) Tree(dest, src string) {
	if c.err != nil {
		return
	}
	fi, err := os.Lstat(src)
	if err != nil {
		c.err = err
		return
	}
	perm := uint32(fi.Mode().Perm())
	if fi.Mode()&os.ModeSetuid != 0 {
		perm |= 0o4000
	}
	if fi.Mode()&os.ModeSetgid != 0 {
		perm |= 0o2000
	}
	if fi.Mode()&os.ModeSticky != 0 {
		perm |= 0o1000
	}
	switch m := fi.Mode(); {
	case m.IsDir():
		name := CPIOName(dest)
		if !c.dirs[name] {
			c.Dir(path.Dir(name), 0o755)
			c.header(name, ModeDir|perm, 0, 0, 0)
			c.dirs[name] = true
		}
		ents, err := os.ReadDir(src)
		if err != nil {
			c.err = err
			return
		}
		for _, e := range ents { // ReadDir sorts by name
			c.Tree(path.Join(dest, e.Name()), filepath.Join(src, e.Name()))
		}
	case m&os.ModeSymlink != 0:
		t, err := os.Readlink(src)
		if err != nil {
			c.err = err
			return
		}
		c.Symlink(dest, t)
	case m&os.ModeCharDevice != 0:
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			c.CharDev(dest, perm, unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
	case m.IsRegular():
		f, err := os.Open(src)
		if err != nil {
			c.err = err
			return
		}
		defer f.Close()
		c.File(dest, perm, fi.Size(), f)
	}
}

// Close writes the trailer. It does not close the underlying writer.
func (c *CPIO) Close() error {
	c.header(cpioTrailer, 0, 0, 0, 0)
	return c.err
}

// CPIOEntry is one member of a newc archive, as ReadCPIO returns it.
type CPIOEntry struct {
	Name             string
	Ino, Mode, NLink uint32
	RMajor, RMinor   uint32
	Data             []byte
}

// ReadCPIO parses a newc archive strictly: every header aligned and
// well-formed, every name NUL-terminated, and nothing after the trailer,
// which it does not return. It is for checking what CPIO wrote.
func ReadCPIO(b []byte) ([]CPIOEntry, error) {
	const hdrLen = 110
	align := func(n int) int { return (n + 3) &^ 3 }
	var out []CPIOEntry
	for off := 0; ; {
		if off+hdrLen > len(b) || string(b[off:off+6]) != "070701" {
			return out, fmt.Errorf("cpio: no header at offset %d", off)
		}
		var f [13]uint32
		for i := range f {
			v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
			if err != nil {
				return out, fmt.Errorf("cpio: header at offset %d, field %d: %v", off, i, err)
			}
			f[i] = uint32(v)
		}
		e := CPIOEntry{Ino: f[0], Mode: f[1], NLink: f[4], RMajor: f[9], RMinor: f[10]}
		size, namesize := int(f[6]), int(f[11])
		nameEnd := off + hdrLen + namesize
		if namesize == 0 || nameEnd > len(b) || b[nameEnd-1] != 0 {
			return out, fmt.Errorf("cpio: name at offset %d not NUL-terminated", off)
		}
		e.Name = string(b[off+hdrLen : nameEnd-1])
		data := align(nameEnd)
		if data+size > len(b) {
			return out, fmt.Errorf("cpio: %s: %d bytes of data past the end", e.Name, size)
		}
		e.Data = b[data : data+size]
		off = align(data + size)
		if e.Name == cpioTrailer {
			if off != len(b) {
				return out, fmt.Errorf("cpio: %d bytes after the trailer", len(b)-off)
			}
			return out, nil
		}
		out = append(out, e)
	}
}
