package p9fs

import (
	"io"
	"sync"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// file is one p9.File: an O_PATH descriptor and, once opened, an I/O one.
// The p9 server serialises what needs it (see the guarantees on p9.File);
// mu guards only the directory listing, which two Treaddirs may share.
type file struct {
	s    *Share
	fd   int         // O_PATH|O_NOFOLLOW, this inode
	st   unix.Stat_t // at walk time; the file type never changes
	open int         // -1, or the descriptor Open or Create made
	// opaque marks the root of a mounted kernel interface (kernelFS): the
	// guest sees an empty, unchangeable directory there, over which it
	// mounts its own (--rootfs / has /proc and /sys in it).
	opaque bool

	mu      sync.Mutex
	dirents []p9.Dirent
}

var _ p9.File = (*file)(nil)

func (f *file) typ() uint32 { return f.st.Mode & unix.S_IFMT }
func (f *file) isDir() bool { return f.typ() == unix.S_IFDIR }

// Walk implements p9.File.Walk. The server walks one name at a time; more
// are taken too, each relative to the last.
func (f *file) Walk(names []string) ([]p9.QID, p9.File, error) {
	if len(names) == 0 {
		fd, err := unix.FcntlInt(uintptr(f.fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, nil, errno(err)
		}
		nf, err := f.s.newFile(fd)
		if err != nil {
			return nil, nil, err
		}
		return nil, nf, nil
	}
	var qids []p9.QID
	cur := f
	for _, name := range names {
		next, err := cur.walkOne(name)
		if cur != f {
			cur.Close()
		}
		if err != nil {
			return nil, nil, err
		}
		qids = append(qids, f.s.qid(&next.st))
		cur = next
	}
	return qids, cur, nil
}

// walkOne opens one name below this directory. A mounted kernel
// interface (see kernelFS) is not entered: its root is opaque.
func (f *file) walkOne(name string) (*file, error) {
	if !f.isDir() {
		return nil, linux.ENOTDIR
	}
	if f.opaque {
		return nil, linux.ENOENT
	}
	fd, err := openAt(f.fd, name, unix.O_PATH, 0)
	if err != nil {
		return nil, err
	}
	nf, err := f.s.newFile(fd)
	if err != nil {
		return nil, err
	}
	if nf.st.Dev != f.st.Dev {
		var fs unix.Statfs_t
		if err := unix.Fstatfs(nf.fd, &fs); err != nil {
			nf.Close()
			return nil, errno(err)
		}
		nf.opaque = kernelFS(fs.Type)
	}
	return nf, nil
}

// WalkGetAttr implements p9.File.WalkGetAttr: the walk's stat is the
// attributes (Linux's client asks for both at once).
func (f *file) WalkGetAttr(names []string) ([]p9.QID, p9.File, p9.AttrMask, p9.Attr, error) {
	qids, nf, err := f.Walk(names)
	if err != nil {
		return nil, nil, p9.AttrMask{}, p9.Attr{}, err
	}
	st := nf.(*file).st
	attr, mask := p9.StatToAttr(&st, p9.AttrMaskAll)
	return qids, nf, mask, attr, nil
}

// GetAttr implements p9.File.GetAttr with a fresh fstat of the inode, which
// works on a file the guest has unlinked.
func (f *file) GetAttr(req p9.AttrMask) (p9.QID, p9.AttrMask, p9.Attr, error) {
	var st unix.Stat_t
	if err := unix.Fstat(f.fd, &st); err != nil {
		return p9.QID{}, p9.AttrMask{}, p9.Attr{}, errno(err)
	}
	attr, mask := p9.StatToAttr(&st, req)
	return f.s.qid(&st), mask, attr, nil
}

// StatFS implements p9.File.StatFS.
func (f *file) StatFS() (p9.FSStat, error) {
	var fs unix.Statfs_t
	if err := unix.Fstatfs(f.fd, &fs); err != nil {
		return p9.FSStat{}, errno(err)
	}
	return p9.FSStat{
		Type:            uint32(fs.Type),
		BlockSize:       uint32(fs.Bsize),
		Blocks:          fs.Blocks,
		BlocksFree:      fs.Bfree,
		BlocksAvailable: fs.Bavail,
		Files:           fs.Files,
		FilesFree:       fs.Ffree,
		FSID:            uint64(uint32(fs.Fsid.Val[0])) | uint64(uint32(fs.Fsid.Val[1]))<<32,
		NameLength:      uint32(fs.Namelen),
	}, nil
}

// Open implements p9.File.Open (9P2000.L lopen; flags are Linux's open
// flags): only directories and regular files, and on a read-only share
// only for reading.
func (f *file) Open(flags p9.OpenFlags) (p9.QID, uint32, error) {
	mode := int(flags) & unix.O_ACCMODE
	if f.s.readOnly && (mode != unix.O_RDONLY || int(flags)&unix.O_TRUNC != 0) {
		return p9.QID{}, 0, linux.EROFS
	}
	var os int
	switch {
	case f.opaque:
		// Nothing of it is ever read (Readdir lists it empty).
		fd, err := unix.FcntlInt(uintptr(f.fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return p9.QID{}, 0, errno(err)
		}
		f.open = fd
		return f.s.qid(&f.st), 0, nil
	case f.isDir():
		os = unix.O_RDONLY | unix.O_DIRECTORY
	case f.typ() == unix.S_IFREG:
		// O_APPEND matters: pwrite(2) on an O_APPEND descriptor appends
		// whatever offset the guest's (possibly stale) size gave.
		os = mode | int(flags)&(unix.O_TRUNC|unix.O_APPEND|unix.O_SYNC|unix.O_DSYNC)
	default:
		return p9.QID{}, 0, linux.ENXIO
	}
	fd, err := reopen(f.fd, os)
	if err != nil {
		return p9.QID{}, 0, err
	}
	f.open = fd
	return f.s.qid(&f.st), 0, nil
}

// reopen opens the inode behind our O_PATH descriptor for I/O. The caller
// checked its type: a regular file or a directory, never a link.
func reopen(fd, flags int) (int, error) {
	for {
		nfd, err := unix.Open(procPath(fd), flags|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, errno(err)
		}
		return nfd, nil
	}
}

// ReadAt implements p9.File.ReadAt.
func (f *file) ReadAt(p []byte, off int64) (int, error) {
	return f.io(unix.Pread, p, off)
}

// WriteAt implements p9.File.WriteAt.
func (f *file) WriteAt(p []byte, off int64) (int, error) {
	if f.s.readOnly {
		return 0, linux.EROFS
	}
	return f.io(unix.Pwrite, p, off)
}

// io runs pread or pwrite on the open regular file until p is done, an
// error, or (reading) the end of the file.
func (f *file) io(op func(int, []byte, int64) (int, error), p []byte, off int64) (int, error) {
	if f.open < 0 || f.isDir() {
		return 0, linux.EBADF
	}
	if off < 0 {
		return 0, linux.EINVAL
	}
	n := 0
	for n < len(p) {
		k, err := op(f.open, p[n:], off+int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, errno(err)
		}
		if k == 0 {
			return n, io.EOF
		}
		n += k
	}
	return n, nil
}

// FSync implements p9.File.FSync.
func (f *file) FSync() error {
	if f.open < 0 || f.s.readOnly {
		return nil
	}
	return errno0(unix.Fsync(f.open))
}

// Close implements p9.File.Close.
func (f *file) Close() error {
	if f.fd >= 0 {
		unix.Close(f.fd)
		f.fd = -1
		f.s.files.Add(-1)
	}
	if f.open >= 0 {
		unix.Close(f.open)
		f.open = -1
	}
	return nil
}

// Readlink implements p9.File.Readlink: readlinkat(2) on the link's own
// O_PATH descriptor, never through its name.
func (f *file) Readlink() (string, error) {
	if f.typ() != unix.S_IFLNK {
		return "", linux.EINVAL
	}
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(f.fd, "", buf)
	if err != nil {
		return "", errno(err)
	}
	return string(buf[:n]), nil
}

// Lock implements p9.File.Lock. Locks are the guest's own business (one
// guest kernel per share); the host file is not locked.
func (f *file) Lock(int, p9.LockType, p9.LockFlags, uint64, uint64, string) (p9.LockStatus, error) {
	return p9.LockStatusOK, nil
}

// Rename implements p9.File.Rename, which the server never calls (it uses
// RenameAt).
func (f *file) Rename(p9.File, string) error { return linux.ENOSYS }

// Renamed implements p9.File.Renamed: descriptors follow their inode, so
// there is no name to update.
func (f *file) Renamed(p9.File, string) {}

// errno0 is errno for a call that returns only an error.
func errno0(err error) error {
	if err == nil {
		return nil
	}
	return errno(err)
}
