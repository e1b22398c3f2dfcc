package nested

import (
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// cpioWriter writes a newc ("070701") cpio archive, the format the Linux
// kernel unpacks as an initramfs. It creates missing parent directories
// itself, so callers can add files in any order.
type cpioWriter struct {
	w    io.Writer
	off  int64
	ino  uint32
	dirs map[string]bool
	err  error
}

func newCPIOWriter(w io.Writer) *cpioWriter {
	return &cpioWriter{w: w, ino: 1, dirs: map[string]bool{"": true, ".": true, "/": true}}
}

const (
	modeDir  = 0o040000
	modeReg  = 0o100000
	modeChr  = 0o020000
	modeLink = 0o120000
)

// clean turns "/a/b/" into "a/b"; the kernel wants names without a leading slash.
func cpioName(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

func (c *cpioWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(b)
	c.off += int64(n)
	c.err = err
}

func (c *cpioWriter) pad() {
	if r := c.off % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

func (c *cpioWriter) header(name string, mode uint32, size int64, rmaj, rmin uint32) {
	if size > 0xffffffff {
		c.err = fmt.Errorf("cpio: %s: %d bytes is too large for newc", name, size)
		return
	}
	nlink := uint32(1)
	if mode&0o170000 == modeDir {
		nlink = 2
	}
	ino := c.ino
	c.ino++
	if name == "TRAILER!!!" {
		ino, nlink = 0, 1
	}
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, mode, 0, 0, nlink, 0, uint32(size), 0, 0, rmaj, rmin, len(name)+1, 0)
	c.write([]byte(hdr))
	c.write(append([]byte(name), 0))
	c.pad()
}

// Dir adds a directory and its missing parents.
func (c *cpioWriter) Dir(name string, perm uint32) {
	name = cpioName(name)
	if c.dirs[name] {
		return
	}
	c.Dir(path.Dir(name), 0o755)
	c.header(name, modeDir|perm, 0, 0, 0)
	c.dirs[name] = true
}

// File adds a regular file with size bytes read from r.
func (c *cpioWriter) File(name string, perm uint32, size int64, r io.Reader) {
	name = cpioName(name)
	c.Dir(path.Dir(name), 0o755)
	c.header(name, modeReg|perm, size, 0, 0)
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
func (c *cpioWriter) Bytes(name string, perm uint32, data []byte) {
	c.File(name, perm, int64(len(data)), strings.NewReader(string(data)))
}

// CharDev adds a character device node.
func (c *cpioWriter) CharDev(name string, perm, major, minor uint32) {
	name = cpioName(name)
	c.Dir(path.Dir(name), 0o755)
	c.header(name, modeChr|perm, 0, major, minor)
}

// HostFile adds the host file or directory tree src as dest. Directories are
// copied recursively; symlinks are followed. Files with any execute bit get
// mode 0755, others 0644.
func (c *cpioWriter) HostFile(dest, src string) {
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

// Close writes the trailer. It does not close the underlying writer.
func (c *cpioWriter) Close() error {
	c.header("TRAILER!!!", 0, 0, 0, 0)
	return c.err
}
