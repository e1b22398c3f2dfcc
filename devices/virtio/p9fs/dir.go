package p9fs

import (
	"encoding/binary"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// Readdir implements p9.File.Readdir (9P2000.L readdir). The listing is
// read with getdents64 when the guest starts at offset 0 and kept, so a
// directory of any size is listed once, and each entry's offset is its
// index + 1: the cookie the guest passes back for the next batch.
//
// count is the guest's byte budget; the server cuts the reply at it, so
// only what can fit is returned (an entry is at least 24 bytes plus its
// name: qid[13] offset[8] type[1] name[s]).
func (f *file) Readdir(offset uint64, count uint32) (p9.Dirents, error) {
	if f.open < 0 || !f.isDir() {
		return nil, linux.EBADF
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.opaque {
		return nil, nil
	}
	if offset == 0 || f.dirents == nil {
		ents, err := f.list()
		if err != nil {
			return nil, err
		}
		f.dirents = ents
	}
	if offset >= uint64(len(f.dirents)) {
		return nil, nil
	}
	var out p9.Dirents
	budget := int(count)
	for _, d := range f.dirents[offset:] {
		budget -= 24 + len(d.Name)
		if budget < 0 {
			break
		}
		out = append(out, d)
	}
	return out, nil
}

// list reads the whole directory from its start.
func (f *file) list() ([]p9.Dirent, error) {
	if _, err := unix.Seek(f.open, 0, 0); err != nil {
		return nil, errno(err)
	}
	ents := []p9.Dirent{}
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Getdents(f.open, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, errno(err)
		}
		if n <= 0 {
			return ents, nil
		}
		ents = f.parse(buf[:n], ents)
	}
}

// parse appends the struct linux_dirent64 records in b (d_ino[8] d_off[8]
// d_reclen[2] d_type[1] d_name, NUL-terminated), bounds-checked.
func (f *file) parse(b []byte, ents []p9.Dirent) []p9.Dirent {
	for len(b) >= 19 {
		reclen := int(binary.NativeEndian.Uint16(b[16:]))
		if reclen < 19 || reclen > len(b) {
			break
		}
		name := b[19:reclen]
		for i, c := range name {
			if c == 0 {
				name = name[:i]
				break
			}
		}
		st := unix.Stat_t{Dev: f.st.Dev, Ino: binary.NativeEndian.Uint64(b), Mode: dtToMode(b[18])}
		q := f.s.qid(&st)
		// The type byte is d_type itself: Linux's client hands it to
		// dir_emit as is (fs/9p/vfs_dir.c), as QEMU's server sends it.
		ents = append(ents, p9.Dirent{QID: q, Type: p9.QIDType(b[18]), Offset: uint64(len(ents) + 1), Name: string(name)})
		b = b[reclen:]
	}
	return ents
}

// dtToMode maps getdents' d_type to the S_IFMT bits.
func dtToMode(t byte) uint32 {
	switch t {
	case unix.DT_DIR:
		return unix.S_IFDIR
	case unix.DT_LNK:
		return unix.S_IFLNK
	case unix.DT_REG:
		return unix.S_IFREG
	case unix.DT_FIFO:
		return unix.S_IFIFO
	case unix.DT_SOCK:
		return unix.S_IFSOCK
	case unix.DT_CHR:
		return unix.S_IFCHR
	case unix.DT_BLK:
		return unix.S_IFBLK
	}
	return 0
}
