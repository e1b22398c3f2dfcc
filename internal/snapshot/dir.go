package snapshot

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// A snapshot is a directory holding these two files and nothing else.
const (
	StateName  = "state"
	MemoryName = "memory"
)

// ErrNoSnapshot is returned by Open for a directory that does not exist or
// is empty: there is nothing to restore, and a snapshot may be made there.
var ErrNoSnapshot = errors.New("no snapshot")

// Writer is a snapshot being written. It lives in a temporary directory
// beside its target and becomes the target only in Commit, after every
// byte is on disk: a writer killed half way leaves only that temporary
// directory, which nothing reads (and the next Create removes once its
// writer is gone).
//
// Create opens everything the writer needs: the target's parent directory,
// the temporary directory and both files in it. From then on the writer
// uses those descriptors and names relative to the parent only (write,
// fsync, renameat2, unlinkat, fstatat), so that a process sandboxed after
// Create (internal/sandbox: no file opened by name) can still commit.
type Writer struct {
	dir    string   // the target, as given
	parent *os.File // the target's parent directory
	base   string   // the target's name in parent
	tmp    string   // the temporary directory's name in parent
	tmpDir *os.File
	mem    *os.File
	state  *os.File
	// old is the target's identity when Create checked it (a snapshot, or
	// an empty directory); zero if there was none. Commit replaces only
	// that.
	old struct{ dev, ino uint64 }
}

// Create starts writing a snapshot that will replace dir. dir must be
// absent, empty, or a snapshot: anything else is not ours to replace.
func Create(dir string) (w *Writer, err error) {
	if err := CheckTarget(dir); err != nil {
		return nil, err
	}
	parentPath, base := filepath.Split(filepath.Clean(dir))
	if parentPath == "" {
		parentPath = "."
	}
	removeStale(parentPath, base)
	w = &Writer{dir: dir, base: base}
	defer func() {
		if err != nil {
			w.Abort()
			w, err = nil, fmt.Errorf("snapshot %s: %w", dir, err)
		}
	}()
	if w.parent, err = os.Open(parentPath); err != nil {
		return w, err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(int(w.parent.Fd()), base, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		w.old.dev, w.old.ino = st.Dev, st.Ino
	}
	tmp, err := os.MkdirTemp(parentPath, tmpPrefix(base)+strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		return w, err
	}
	w.tmp = filepath.Base(tmp)
	if w.tmpDir, err = os.Open(tmp); err != nil {
		return w, err
	}
	create := func(name string) (*os.File, error) {
		return os.OpenFile(filepath.Join(tmp, name), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	}
	if w.mem, err = create(MemoryName); err != nil {
		return w, err
	}
	if w.state, err = create(StateName); err != nil {
		return w, err
	}
	return w, nil
}

func tmpPrefix(base string) string { return "." + base + ".tmp-" }

// removeStale removes the temporary directories of writers that died.
func removeStale(parent, base string) {
	ents, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), tmpPrefix(base))
		if !ok {
			continue
		}
		pid, _, _ := strings.Cut(rest, "-")
		if n, err := strconv.Atoi(pid); err == nil && n > 0 && unix.Kill(n, 0) == unix.ESRCH {
			os.RemoveAll(filepath.Join(parent, e.Name()))
		}
	}
}

// CheckTarget says whether a snapshot may be written to dir.
func CheckTarget(dir string) error {
	st, err := os.Lstat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("snapshot %s: %v", dir, errors.Unwrap(err))
	case !st.IsDir():
		return fmt.Errorf("snapshot %s exists and is not a directory", dir)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("snapshot %s: %v", dir, errors.Unwrap(err))
	}
	for _, e := range ents {
		if e.Name() != StateName && e.Name() != MemoryName {
			return fmt.Errorf("snapshot %s holds %s: not a microvm snapshot directory, refusing to replace it", dir, e.Name())
		}
	}
	return nil
}

// Dir is the directory the snapshot will replace.
func (w *Writer) Dir() string { return w.dir }

// Memory is the memory file to fill (see WriteMemory).
func (w *Writer) Memory() *os.File { return w.mem }

// Commit writes the state file, makes both files durable and puts the new
// directory in place of dir in one step (rename(2) with RENAME_EXCHANGE,
// so that dir is never missing for a reader).
func (w *Writer) Commit(state []byte) error {
	err := w.commit(state)
	if err != nil {
		w.Abort()
		return fmt.Errorf("snapshot %s: %w", w.dir, err)
	}
	w.close()
	return nil
}

func (w *Writer) commit(state []byte) error {
	if err := w.mem.Sync(); err != nil {
		return err
	}
	if _, err := w.state.Write(state); err != nil {
		return err
	}
	if err := w.state.Sync(); err != nil {
		return err
	}
	if err := w.tmpDir.Sync(); err != nil {
		return err
	}
	pfd := int(w.parent.Fd())
	var st unix.Stat_t
	switch err := unix.Fstatat(pfd, w.base, &st, unix.AT_SYMLINK_NOFOLLOW); {
	case errors.Is(err, unix.ENOENT):
		if err := unix.Renameat2(pfd, w.tmp, pfd, w.base, unix.RENAME_NOREPLACE); err != nil {
			return err
		}
		w.tmp = "" // it is the snapshot now
	case err != nil:
		return err
	case st.Dev != w.old.dev || st.Ino != w.old.ino || st.Mode&unix.S_IFMT != unix.S_IFDIR:
		// Replaced since Create checked it: not known to be ours.
		return fmt.Errorf("%s changed while the snapshot was written; not replacing it", w.dir)
	default:
		if err := unix.Renameat2(pfd, w.tmp, pfd, w.base, unix.RENAME_EXCHANGE); err != nil {
			return fmt.Errorf("replace the old snapshot: %w", err)
		}
		// The temporary name now holds the old snapshot.
		w.removeTmp()
	}
	return w.parent.Sync()
}

// removeTmp removes the directory under the temporary name: a snapshot's
// two files and the directory, nothing else (a directory holding more is
// left as it is: unlinkat fails on it).
func (w *Writer) removeTmp() {
	if w.parent == nil || w.tmp == "" {
		return
	}
	pfd := int(w.parent.Fd())
	for _, n := range []string{StateName, MemoryName} {
		_ = unix.Unlinkat(pfd, w.tmp+"/"+n, 0)
	}
	_ = unix.Unlinkat(pfd, w.tmp, unix.AT_REMOVEDIR)
	w.tmp = ""
}

// close releases the writer's descriptors.
func (w *Writer) close() {
	for _, f := range []**os.File{&w.mem, &w.state, &w.tmpDir, &w.parent} {
		if *f != nil {
			(*f).Close()
			*f = nil
		}
	}
}

// Abort drops what was written. It may be called more than once, and after
// Commit (it then does nothing).
func (w *Writer) Abort() {
	w.removeTmp()
	w.close()
}

// Open reads and checks the snapshot in dir and opens its memory file,
// which must be exactly as long as the state says: a shorter one would
// fault the guest (or the VMM) on the missing pages. The caller closes the
// memory file.
//
// A restore runs the guest the snapshot holds with the caller's disks,
// network and command, often as root, and the state's checksum is no
// MAC: whoever can write the directory or its files chooses that guest.
// So the directory and both files must be owned by the effective uid or
// by root and writable by no one else (as sshd's StrictModes), symbolic
// links are not followed (a "memory" link would map any file of the right
// size into the guest), and both files are opened relative to one
// descriptor of the directory, so that they are from one snapshot even
// if another process replaces DIR meanwhile (Commit swaps directories).
func Open(dir string) (*File, *os.File, error) {
	// A Commit of another process swaps DIR for its new directory, then
	// empties the old one, which this may hold open: a file missing from
	// it then is no damage, and the new DIR is read instead (a few times
	// at most: each retry needs another whole snapshot written meanwhile).
	for try := 0; ; try++ {
		f, mem, err := openOnce(dir)
		if !errors.Is(err, errReplaced) {
			return f, mem, err
		}
		if try == 3 {
			return nil, nil, fmt.Errorf("%s: replaced again and again while being read", dir)
		}
	}
}

// errReplaced is openOnce's: DIR was replaced while it read it.
var errReplaced = errors.New("replaced while read")

// testHookOpened, if set, runs once openOnce has DIR open (for a test to
// replace it then).
var testHookOpened func()

// replaced reports whether dir no longer names the directory d.
func replaced(d *os.File, dir string) bool {
	var have, now unix.Stat_t
	return unix.Fstat(int(d.Fd()), &have) == nil && (unix.Lstat(dir, &now) != nil || now.Dev != have.Dev || now.Ino != have.Ino)
}

func openOnce(dir string) (*File, *os.File, error) {
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil, nil, ErrNoSnapshot
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENOTDIR):
		// With O_DIRECTORY, Linux says ENOTDIR for a symbolic link too.
		if st, lerr := os.Lstat(dir); lerr == nil && st.Mode()&os.ModeSymlink != 0 {
			return nil, nil, &FormatError{Msg: fmt.Sprintf("%s is a symbolic link: not followed, give the directory itself", dir)}
		}
		return nil, nil, &FormatError{Msg: fmt.Sprintf("%s is not a directory", dir)}
	case err != nil:
		return nil, nil, fmt.Errorf("%s: %w", dir, err)
	}
	d := os.NewFile(uintptr(dfd), dir)
	defer d.Close()
	if err := checkTrusted(dfd, dir, unix.S_IFDIR); err != nil {
		return nil, nil, err
	}
	if testHookOpened != nil {
		testHookOpened()
	}
	sp := filepath.Join(dir, StateName)
	sf, err := openIn(d, dir, StateName)
	if errors.Is(err, unix.ENOENT) {
		if replaced(d, dir) {
			return nil, nil, errReplaced
		}
		if names, _ := d.Readdirnames(1); len(names) == 0 {
			return nil, nil, ErrNoSnapshot
		}
		return nil, nil, &FormatError{Msg: fmt.Sprintf("%s: no state file: not a microvm snapshot", dir)}
	}
	if err != nil {
		return nil, nil, err
	}
	b, err := readState(sf, sp)
	sf.Close()
	if err != nil {
		return nil, nil, err
	}
	f, err := Decode(b)
	if err != nil {
		var fe *FormatError
		if errors.As(err, &fe) {
			return nil, nil, &FormatError{Msg: sp + ": " + fe.Msg, Outdated: fe.Outdated}
		}
		return nil, nil, err
	}
	mp := filepath.Join(dir, MemoryName)
	mem, err := openIn(d, dir, MemoryName)
	if errors.Is(err, unix.ENOENT) && replaced(d, dir) {
		return nil, nil, errReplaced
	}
	if err != nil {
		var fe *FormatError
		if !errors.As(err, &fe) {
			err = &FormatError{Msg: fmt.Sprintf("%s: %v", mp, errors.Unwrap(err))}
		}
		return nil, nil, err
	}
	if ms, err := mem.Stat(); err != nil || uint64(ms.Size()) != f.Memory.Size {
		mem.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", mp, err)
		}
		return nil, nil, &FormatError{Msg: fmt.Sprintf("%s is %d bytes; the state says %d: the snapshot is damaged", mp, ms.Size(), f.Memory.Size)}
	}
	return f, mem, nil
}

// openIn opens the regular file name in the snapshot directory d (dir is
// its path, for messages) and checks it as Open says. O_NOFOLLOW refuses a
// symbolic link; O_NONBLOCK makes a FIFO or device fail the regular-file
// check instead of blocking the open for ever (O_NOCTTY: a terminal there
// does not become ours either). A missing file is
// unix.ENOENT, wrapped; every other refusal is a FormatError.
func openIn(d *os.File, dir, name string) (*os.File, error) {
	path := filepath.Join(dir, name)
	fd, err := unix.Openat(int(d.Fd()), name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil, fmt.Errorf("%s: %w", path, err)
	case errors.Is(err, unix.ELOOP):
		return nil, &FormatError{Msg: fmt.Sprintf("%s is a symbolic link: a snapshot's files are never links", path)}
	case err != nil:
		return nil, &FormatError{Msg: fmt.Sprintf("%s: %v", path, err)}
	}
	if err := checkTrusted(fd, path, unix.S_IFREG); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// A regular file, whose reads never block: clear the flag before
	// os.NewFile, which would otherwise take it for a pollable descriptor.
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// checkTrusted refuses fd (at path) unless it is of type typ (S_IFDIR or
// S_IFREG), owned by the effective uid or root, and not writable by group
// or others.
func checkTrusted(fd int, path string, typ uint32) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	want := "a regular file"
	if typ == unix.S_IFDIR {
		want = "a directory"
	}
	euid := uint32(os.Geteuid())
	switch {
	case st.Mode&unix.S_IFMT != typ:
		return &FormatError{Msg: fmt.Sprintf("%s is not %s: not a microvm snapshot", path, want)}
	case st.Uid != euid && st.Uid != 0:
		return &FormatError{Msg: fmt.Sprintf("%s is owned by uid %d, not by this user (uid %d) or root: refusing to restore what another user can change", path, st.Uid, euid)}
	case st.Mode&0o022 != 0:
		return &FormatError{Msg: fmt.Sprintf("%s is writable by group or others (mode %#o): refusing to restore what another user can change", path, st.Mode&0o7777)}
	}
	return nil
}

// readState reads the state file f (at path), at most MaxStateSize bytes.
func readState(f *os.File, path string) ([]byte, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	switch {
	case st.Size() == 0:
		// Say so, rather than "EOF" or "not a state file".
		return nil, &FormatError{Msg: path + ": empty (not a snapshot)"}
	case st.Size() > MaxStateSize:
		return nil, &FormatError{Msg: fmt.Sprintf("%s: %d bytes, not a state file", path, st.Size())}
	}
	// Read one byte past the size: a file that grew meanwhile is refused
	// by Decode rather than read in part. One that shrank to nothing reads
	// io.EOF, and Decode calls it what it is.
	b := make([]byte, st.Size()+1)
	n, err := io.ReadFull(f, b)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b[:n], nil
}
