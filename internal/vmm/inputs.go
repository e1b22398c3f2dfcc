package vmm

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/microvm-dev/microvm/internal/snapshot"
	"golang.org/x/sys/unix"
)

// The identity of the files a snapshot depends on (kernel, initrd, disks):
// where the file is and when it last changed, and for the kernel and the
// initrd also a hash of their bytes.

// statID returns path's identity without the hash.
func statID(path string) (snapshot.FileID, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	var st unix.Stat_t
	if err := unix.Stat(abs, &st); err != nil {
		return snapshot.FileID{}, fmt.Errorf("%s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG && st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return snapshot.FileID{}, fmt.Errorf("%s is not a regular file: a snapshot cannot refer to it", path)
	}
	return snapshot.FileID{
		Path: abs, Size: uint64(st.Size), MtimeNS: st.Mtim.Nano(),
		Dev: st.Dev, Ino: st.Ino,
	}, nil
}

// fileID is statID of an open file: f's identity, under the absolute name
// abs it was opened by (made absolute beforehand: filepath.Abs may stat
// and getcwd, which a sandboxed process may not).
func fileID(f *os.File, abs string) (snapshot.FileID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return snapshot.FileID{}, fmt.Errorf("%s: %w", abs, err)
	}
	return snapshot.FileID{
		Path: abs, Size: uint64(st.Size), MtimeNS: st.Mtim.Nano(),
		Dev: st.Dev, Ino: st.Ino,
	}, nil
}

// sameStat reports whether two identities name the same unchanged file.
func sameStat(a, b snapshot.FileID) bool {
	return a.Size == b.Size && a.MtimeNS == b.MtimeNS && a.Dev == b.Dev && a.Ino == b.Ino
}

// hashedID is statID with the SHA-256 of the file's bytes. want, if its
// Path is set, is the identity the file had when the machine was built:
// the file must not have changed since, or the hash would not be of what
// the guest booted.
func hashedID(path string, want snapshot.FileID) (snapshot.FileID, error) {
	id, err := statID(path)
	if err != nil {
		return id, err
	}
	if want.Path != "" && !sameStat(id, want) {
		return id, fmt.Errorf("%s changed after the guest booted from it", path)
	}
	f, err := os.Open(id.Path)
	if err != nil {
		return id, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return id, fmt.Errorf("%s: %w", path, err)
	}
	copy(id.SHA256[:], h.Sum(nil))
	return id, nil
}

// errChanged is a file that is not the one a snapshot was made with.
var errChanged = errors.New("changed")

// matchesID checks that path is the file saved was made from: the same
// file unchanged (no need to read it), or one with the same bytes (a
// copy, or the same build made again).
func matchesID(path string, saved snapshot.FileID) error {
	id, err := statID(path)
	if err != nil {
		return err
	}
	if id.Path == saved.Path && sameStat(id, saved) {
		return nil
	}
	h, err := hashedID(path, snapshot.FileID{})
	if err != nil {
		return err
	}
	if h.SHA256 != saved.SHA256 {
		return errChanged
	}
	return nil
}
