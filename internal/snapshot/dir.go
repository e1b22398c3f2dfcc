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
func Open(dir string) (*File, *os.File, error) {
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, nil, ErrNoSnapshot
	case err != nil:
		return nil, nil, fmt.Errorf("%s: %v", dir, errors.Unwrap(err))
	case !st.IsDir():
		return nil, nil, &FormatError{Msg: fmt.Sprintf("%s is not a directory", dir)}
	}
	sp := filepath.Join(dir, StateName)
	b, err := readState(sp)
	if errors.Is(err, os.ErrNotExist) {
		if ents, _ := os.ReadDir(dir); len(ents) == 0 {
			return nil, nil, ErrNoSnapshot
		}
		return nil, nil, &FormatError{Msg: fmt.Sprintf("%s: no state file: not a microvm snapshot", dir)}
	}
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
	mem, err := os.Open(mp)
	if err != nil {
		return nil, nil, &FormatError{Msg: fmt.Sprintf("%s: %v", mp, errors.Unwrap(err))}
	}
	ms, err := mem.Stat()
	if err == nil && (!ms.Mode().IsRegular() || uint64(ms.Size()) != f.Memory.Size) {
		err = &FormatError{Msg: fmt.Sprintf("%s is %d bytes; the state says %d: the snapshot is damaged", mp, ms.Size(), f.Memory.Size)}
	}
	if err != nil {
		mem.Close()
		return nil, nil, err
	}
	return f, mem, nil
}

func readState(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() || st.Size() > MaxStateSize {
		return nil, &FormatError{Msg: fmt.Sprintf("%s: %d bytes, not a state file", path, st.Size())}
	}
	// Read one byte past the size: a file that grew meanwhile is refused
	// by Decode rather than read in part.
	b := make([]byte, st.Size()+1)
	n, err := io.ReadFull(f, b)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b[:n], nil
}
