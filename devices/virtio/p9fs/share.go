// Package p9fs is the host file backend of virtio-9p: a directory served as
// github.com/hugelgupf/p9 server-side Files, on fd-relative system calls
// only, for a guest that is not trusted.
//
// Every File holds an O_PATH descriptor of its own inode. A walk opens one
// name at a time relative to its directory's descriptor with openat2(2)
// (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS, O_NOFOLLOW):
// no "..", no "/", and a symbolic link is never followed by the host, only
// opened as a link the guest may read (9P2000.L readlink) and resolve on
// its side. So whatever the guest names or swaps in the tree meanwhile, the
// host never reaches an inode outside the share. The other rules:
//   - mode bits given by the guest lose S_ISUID and S_ISGID (create, mkdir,
//     mknod, chmod), and mkdir clears a setgid inherited from its parent;
//   - mknod makes FIFOs, sockets and regular files, never devices (EPERM);
//   - only regular files and directories are opened: a FIFO, socket or
//     device node in the share cannot block or reach a host driver (ENXIO);
//   - the host's kernel interfaces (procfs, sysfs, debugfs, cgroups, ...)
//     are not entered when they are mounted inside the share: their mount
//     point is an empty directory the guest cannot change, so sharing /
//     does not hand the guest /proc/<pid>/mem or /sys, and the guest
//     mounts its own there;
//   - a read-only share answers every modifying request with EROFS;
//   - xattrs are read through; writes are limited to user.* and POSIX
//     ACLs (security.capability would be a setuid by another name).
//
// Reopening a File for I/O goes through /proc/self/fd/N of its own O_PATH
// descriptor, which names exactly that inode, also after the guest has
// unlinked or renamed it (unlink-while-open, rename over an open file).
package p9fs

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// MaxFiles bounds the Files (host descriptors) one share keeps for the
// guest; beyond it walks fail with ENFILE instead of exhausting the VMM's
// descriptors.
const MaxFiles = 32768

// Share is one host directory served over 9P.
type Share struct {
	root     int // O_PATH descriptor of the directory
	readOnly bool
	files    atomic.Int64

	mu   sync.Mutex
	devs map[uint64]uint64 // st_dev -> index in QID paths
}

// Open opens dir as a share. The error names dir.
func Open(dir string, readOnly bool) (*Share, error) {
	raiseFileLimit()
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err == nil && kernelFS(fs.Type) {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: a kernel interface (procfs, sysfs, ...) cannot be shared", dir)
	}
	return &Share{root: fd, readOnly: readOnly, devs: map[uint64]uint64{}}, nil
}

// raiseFileLimit lets the process hold MaxFiles descriptors per share
// besides its own: the soft limit up to the hard one, and as root the hard
// one too. A guest whose kernel caches many dentries (cache=loose) keeps a
// fid, so a descriptor, for each.
func raiseFileLimit() {
	var l unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &l) != nil {
		return
	}
	const want = 4 * MaxFiles
	if l.Cur >= want {
		return
	}
	if l.Max < want && unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: want, Max: want}) == nil {
		return
	}
	_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: min(want, l.Max), Max: l.Max})
}

// Close closes the share's root; Files the server still holds keep their
// own descriptors until it closes them.
func (s *Share) Close() error { return unix.Close(s.root) }

// ReadOnly reports whether the share refuses changes.
func (s *Share) ReadOnly() bool { return s.readOnly }

// Attach implements p9.Attacher: the share's root.
func (s *Share) Attach() (p9.File, error) {
	fd, err := unix.FcntlInt(uintptr(s.root), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, errno(err)
	}
	return s.newFile(fd)
}

// newFile wraps an O_PATH descriptor, which it owns from here on.
func (s *Share) newFile(fd int) (*file, error) {
	if s.files.Add(1) > MaxFiles {
		s.files.Add(-1)
		unix.Close(fd)
		return nil, linux.ENFILE
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		s.files.Add(-1)
		unix.Close(fd)
		return nil, errno(err)
	}
	return &file{s: s, fd: fd, st: st, open: -1}, nil
}

// qid names an inode: the inode number, with the index of its file system
// in the top byte, so that inodes of different mounts under the share
// (sharing /) stay distinct (9P2000 intro(5): qid.path is unique per file).
func (s *Share) qid(st *unix.Stat_t) p9.QID {
	s.mu.Lock()
	idx, ok := s.devs[st.Dev]
	if !ok {
		idx = uint64(len(s.devs))
		s.devs[st.Dev] = idx
	}
	s.mu.Unlock()
	return p9.QID{
		Type: p9.FileMode(st.Mode).QIDType(),
		Path: st.Ino ^ idx<<56,
	}
}

// kernelFS reports the file systems that are the host kernel's interfaces
// rather than files (statfs(2) f_type, linux/magic.h).
func kernelFS(t int64) bool {
	switch t {
	case unix.PROC_SUPER_MAGIC, unix.SYSFS_MAGIC, unix.DEBUGFS_MAGIC,
		unix.TRACEFS_MAGIC, unix.SECURITYFS_MAGIC, unix.CGROUP_SUPER_MAGIC,
		unix.CGROUP2_SUPER_MAGIC, unix.BPF_FS_MAGIC, configfsMagic,
		unix.EFIVARFS_MAGIC, unix.PSTOREFS_MAGIC, unix.SELINUX_MAGIC,
		unix.SMACK_MAGIC, unix.BINFMTFS_MAGIC, fusectlMagic,
		unix.DEVPTS_SUPER_MAGIC, unix.NSFS_MAGIC:
		return true
	}
	return false
}

// configfsMagic and fusectlMagic are linux/magic.h values x/sys lacks.
const (
	configfsMagic = 0x62656570
	fusectlMagic  = 0x65735543
)

// procPath is the magic link to one of our own descriptors: the host's
// way to reopen exactly that inode. It is never built from a guest name.
func procPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// checkName refuses what is not a single directory entry name.
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || len(name) > 255 {
		return linux.EINVAL
	}
	for i := 0; i < len(name); i++ {
		if name[i] == '/' || name[i] == 0 {
			return linux.EINVAL
		}
	}
	return nil
}

// resolve are the openat2 rules of every lookup: beneath the directory,
// no symlink and no magic link followed, not even as the last component
// (with O_NOFOLLOW|O_PATH that returns the link itself).
const resolve = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// openAt opens name in directory dir under the rules above.
func openAt(dir int, name string, flags int, mode uint32) (int, error) {
	if err := checkName(name); err != nil {
		return -1, err
	}
	for {
		fd, err := unix.Openat2(dir, name, &unix.OpenHow{
			Flags:   uint64(flags | unix.O_NOFOLLOW | unix.O_CLOEXEC),
			Mode:    uint64(mode),
			Resolve: resolve,
		})
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, errno(err)
		}
		return fd, nil
	}
}

// errno turns a host error into the errno 9P2000.L's Rlerror carries.
func errno(err error) error {
	if e, ok := err.(unix.Errno); ok {
		return linux.Errno(e)
	}
	return err
}

// perm is the guest's mode with only permission bits and the sticky bit
// kept: never S_ISUID or S_ISGID on the host.
func perm(m p9.FileMode) uint32 { return uint32(m) & 01777 }
