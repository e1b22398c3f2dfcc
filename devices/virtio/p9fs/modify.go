package p9fs

import (
	"os"
	"strings"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// The requests that change the tree. Each refuses on a read-only share
// first, and names are always single entries of this directory's own
// descriptor (checkName, openAt).

// writable is the check every modifying request starts with.
func (f *file) writable() error {
	if f.s.readOnly {
		return linux.EROFS
	}
	if f.opaque {
		return linux.EACCES
	}
	return nil
}

// dir is the check of requests that name an entry in this directory.
func (f *file) dir(name string) error {
	if err := f.writable(); err != nil {
		return err
	}
	if !f.isDir() {
		return linux.ENOTDIR
	}
	return checkName(name)
}

// chown gives a new inode the guest's owner where the host lets us (as
// root: what QEMU's passthrough model does); as another user it stays ours.
func chown(fd int, name string, uid p9.UID, gid p9.GID) {
	u, g := -1, -1
	if uid.Ok() {
		u = int(uid)
	}
	if gid.Ok() {
		g = int(gid)
	}
	if (u >= 0 || g >= 0) && os.Geteuid() == 0 {
		flags := unix.AT_SYMLINK_NOFOLLOW
		if name == "" {
			flags |= unix.AT_EMPTY_PATH
		}
		_ = unix.Fchownat(fd, name, u, g, flags)
	}
}

// Create implements p9.File.Create (9P2000.L lcreate): a regular file,
// opened. The file is made with O_EXCL first, so that the mode is set only
// on a file this request created (exactly: the host's umask does not
// apply, the guest applied its own).
func (f *file) Create(name string, flags p9.OpenFlags, mode p9.FileMode, uid p9.UID, gid p9.GID) (p9.File, p9.QID, uint32, error) {
	if err := f.dir(name); err != nil {
		return nil, p9.QID{}, 0, err
	}
	acc := int(flags)&unix.O_ACCMODE | int(flags)&(unix.O_APPEND|unix.O_SYNC|unix.O_DSYNC|unix.O_TRUNC)
	fd, err := openAt(f.fd, name, acc|unix.O_CREAT|unix.O_EXCL, perm(mode))
	if err == nil {
		_ = unix.Fchmod(fd, perm(mode))
		chown(fd, "", uid, gid)
		var pfd int
		if pfd, err = reopen(fd, unix.O_PATH); err != nil {
			unix.Close(fd)
			return nil, p9.QID{}, 0, err
		}
		return f.opened(pfd, fd)
	}
	if err != linux.EEXIST || int(flags)&unix.O_EXCL != 0 {
		return nil, p9.QID{}, 0, err
	}
	// It exists: open it as lopen would, if it is a regular file. The type
	// is checked on an O_PATH descriptor before the inode is opened, so a
	// FIFO or a device node swapped in is never opened.
	pfd, err := openAt(f.fd, name, unix.O_PATH, 0)
	if err != nil {
		return nil, p9.QID{}, 0, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(pfd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(pfd)
		return nil, p9.QID{}, 0, linux.EEXIST
	}
	if fd, err = reopen(pfd, acc); err != nil {
		unix.Close(pfd)
		return nil, p9.QID{}, 0, err
	}
	return f.opened(pfd, fd)
}

// opened makes the File of Create from its O_PATH and open descriptors.
func (f *file) opened(pfd, fd int) (p9.File, p9.QID, uint32, error) {
	nf, err := f.s.newFile(pfd)
	if err != nil {
		unix.Close(fd)
		return nil, p9.QID{}, 0, err
	}
	nf.open = fd
	return nf, f.s.qid(&nf.st), 0, nil
}

// Mkdir implements p9.File.Mkdir. chmod after mkdirat sets the exact mode:
// it drops a setgid bit inherited from the parent and the host's umask.
func (f *file) Mkdir(name string, mode p9.FileMode, uid p9.UID, gid p9.GID) (p9.QID, error) {
	if err := f.dir(name); err != nil {
		return p9.QID{}, err
	}
	if err := unix.Mkdirat(f.fd, name, perm(mode)&0777); err != nil {
		return p9.QID{}, errno(err)
	}
	return f.made(name, func(nf *file) {
		if nf.isDir() { // not whatever may have been swapped in meanwhile
			_ = unix.Chmod(procPath(nf.fd), perm(mode))
		}
		chown(nf.fd, "", uid, gid)
	})
}

// made looks up the entry a request just made and returns its QID, after
// fix (which may change its mode or owner) has run on it.
func (f *file) made(name string, fix func(*file)) (p9.QID, error) {
	fd, err := openAt(f.fd, name, unix.O_PATH, 0)
	if err != nil {
		return p9.QID{}, err
	}
	nf, err := f.s.newFile(fd)
	if err != nil {
		return p9.QID{}, err
	}
	defer nf.Close()
	if fix != nil {
		fix(nf)
	}
	return f.s.qid(&nf.st), nil
}

// Symlink implements p9.File.Symlink. The target is the guest's string;
// the host never follows it (see the package comment).
func (f *file) Symlink(target, name string, uid p9.UID, gid p9.GID) (p9.QID, error) {
	if err := f.dir(name); err != nil {
		return p9.QID{}, err
	}
	if err := unix.Symlinkat(target, f.fd, name); err != nil {
		return p9.QID{}, errno(err)
	}
	chown(f.fd, name, uid, gid)
	return f.made(name, nil)
}

// Link implements p9.File.Link: a hard link to target, another File of
// this share, made from its descriptor rather than a name.
func (f *file) Link(target p9.File, name string) error {
	if err := f.dir(name); err != nil {
		return err
	}
	t, ok := target.(*file)
	if !ok || t.s != f.s {
		return linux.EXDEV
	}
	if t.isDir() {
		return linux.EPERM
	}
	err := unix.Linkat(t.fd, "", f.fd, name, unix.AT_EMPTY_PATH)
	if (err == unix.ENOENT || err == unix.EPERM) && t.typ() != unix.S_IFLNK {
		// AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; the magic link does
		// not. Never for a symlink: the host must not follow the guest's.
		err = unix.Linkat(unix.AT_FDCWD, procPath(t.fd), f.fd, name, unix.AT_SYMLINK_FOLLOW)
	}
	return errno0(err)
}

// Mknod implements p9.File.Mknod: FIFOs, sockets and regular files only;
// device nodes are refused, whoever the guest says it is.
func (f *file) Mknod(name string, mode p9.FileMode, _, _ uint32, uid p9.UID, gid p9.GID) (p9.QID, error) {
	if err := f.dir(name); err != nil {
		return p9.QID{}, err
	}
	t := uint32(mode) & unix.S_IFMT
	switch t {
	case 0, unix.S_IFREG:
		t = unix.S_IFREG
	case unix.S_IFIFO, unix.S_IFSOCK:
	default:
		return p9.QID{}, linux.EPERM
	}
	if err := unix.Mknodat(f.fd, name, t|perm(mode)&0777, 0); err != nil {
		return p9.QID{}, errno(err)
	}
	return f.made(name, func(nf *file) { chown(nf.fd, "", uid, gid) })
}

// RenameAt implements p9.File.RenameAt: renameat(2) between two directory
// descriptors; a File open on the replaced entry keeps its inode.
func (f *file) RenameAt(oldName string, newDir p9.File, newName string) error {
	if err := f.dir(oldName); err != nil {
		return err
	}
	nd, ok := newDir.(*file)
	if !ok || nd.s != f.s {
		return linux.EXDEV
	}
	if err := nd.dir(newName); err != nil {
		return err
	}
	return errno0(unix.Renameat(f.fd, oldName, nd.fd, newName))
}

// UnlinkAt implements p9.File.UnlinkAt; flags may only say AT_REMOVEDIR.
func (f *file) UnlinkAt(name string, flags uint32) error {
	if err := f.dir(name); err != nil {
		return err
	}
	return errno0(unix.Unlinkat(f.fd, name, int(flags&unix.AT_REMOVEDIR)))
}

// SetAttr implements p9.File.SetAttr (9P2000.L setattr). Permissions lose
// S_ISUID and S_ISGID. The inode is reached through its own descriptor.
func (f *file) SetAttr(valid p9.SetAttrMask, attr p9.SetAttr) error {
	if err := f.writable(); err != nil {
		return err
	}
	link := f.typ() == unix.S_IFLNK
	if valid.Permissions {
		if link {
			return linux.EOPNOTSUPP
		}
		if err := unix.Chmod(procPath(f.fd), perm(attr.Permissions)); err != nil {
			return errno(err)
		}
	}
	if valid.UID || valid.GID {
		u, g := -1, -1
		if valid.UID {
			u = int(attr.UID)
		}
		if valid.GID {
			g = int(attr.GID)
		}
		if err := unix.Fchownat(f.fd, "", u, g, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return errno(err)
		}
	}
	if valid.Size {
		if f.typ() != unix.S_IFREG {
			return linux.EINVAL
		}
		if err := unix.Truncate(procPath(f.fd), int64(attr.Size)); err != nil {
			return errno(err)
		}
	}
	if valid.ATime || valid.MTime {
		if link {
			return nil // Linux has no way to set a link's times through a descriptor
		}
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		set := func(i int, on, given bool, sec, nsec uint64) {
			switch {
			case on && given:
				ts[i] = unix.Timespec{Sec: int64(sec), Nsec: int64(nsec)}
			case on:
				ts[i] = unix.Timespec{Nsec: unix.UTIME_NOW}
			}
		}
		set(0, valid.ATime, valid.ATimeNotSystemTime, attr.ATimeSeconds, attr.ATimeNanoSeconds)
		set(1, valid.MTime, valid.MTimeNotSystemTime, attr.MTimeSeconds, attr.MTimeNanoSeconds)
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, procPath(f.fd), ts, 0); err != nil {
			return errno(err)
		}
	}
	return nil
}

// xattrPath is where the xattr calls reach this inode: regular files and
// directories only (a link's magic path would name its target's).
func (f *file) xattrPath() (string, error) {
	if t := f.typ(); f.opaque || t != unix.S_IFREG && t != unix.S_IFDIR {
		return "", linux.EOPNOTSUPP
	}
	return procPath(f.fd), nil
}

// GetXattr implements p9.File.GetXattr: read through.
func (f *file) GetXattr(name string) ([]byte, error) {
	p, err := f.xattrPath()
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 64<<10) // XATTR_SIZE_MAX
	n, err := unix.Getxattr(p, name, buf)
	if err != nil {
		return nil, errno(err)
	}
	return buf[:n], nil
}

// ListXattrs implements p9.File.ListXattrs.
func (f *file) ListXattrs() ([]string, error) {
	p, err := f.xattrPath()
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 64<<10)
	n, err := unix.Listxattr(p, buf)
	if err != nil {
		return nil, errno(err)
	}
	var names []string
	for _, s := range strings.Split(string(buf[:n]), "\x00") {
		if s != "" {
			names = append(names, s)
		}
	}
	return names, nil
}

// settable are the xattrs a guest may write: its own user.* and POSIX
// ACLs. security.* (file capabilities, LSM labels) and trusted.* are the
// host's.
func settable(name string) bool {
	return strings.HasPrefix(name, "user.") || name == "system.posix_acl_access" || name == "system.posix_acl_default"
}

// SetXattr implements p9.File.SetXattr.
func (f *file) SetXattr(name string, data []byte, flags p9.XattrFlags) error {
	p, err := f.xattrWrite(name)
	if err != nil {
		return err
	}
	return errno0(unix.Setxattr(p, name, data, int(flags)&(unix.XATTR_CREATE|unix.XATTR_REPLACE)))
}

// RemoveXattr implements p9.File.RemoveXattr.
func (f *file) RemoveXattr(name string) error {
	p, err := f.xattrWrite(name)
	if err != nil {
		return err
	}
	return errno0(unix.Removexattr(p, name))
}

// xattrWrite checks a change of xattr name and returns where to make it.
func (f *file) xattrWrite(name string) (string, error) {
	if err := f.writable(); err != nil {
		return "", err
	}
	if !settable(name) {
		return "", linux.EPERM
	}
	return f.xattrPath()
}
