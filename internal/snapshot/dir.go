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
type Writer struct {
	dir, tmp string
	mem      *os.File
}

// Create starts writing a snapshot that will replace dir. dir must be
// absent, empty, or a snapshot: anything else is not ours to replace.
func Create(dir string) (*Writer, error) {
	if err := CheckTarget(dir); err != nil {
		return nil, err
	}
	parent, base := filepath.Split(filepath.Clean(dir))
	if parent == "" {
		parent = "."
	}
	removeStale(parent, base)
	tmp, err := os.MkdirTemp(parent, tmpPrefix(base)+strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", dir, err)
	}
	mem, err := os.OpenFile(filepath.Join(tmp, MemoryName), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("snapshot %s: %w", dir, err)
	}
	return &Writer{dir: dir, tmp: tmp, mem: mem}, nil
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
	return nil
}

func (w *Writer) commit(state []byte) error {
	if err := w.mem.Sync(); err != nil {
		return err
	}
	if err := w.mem.Close(); err != nil {
		return err
	}
	w.mem = nil
	if err := writeSynced(filepath.Join(w.tmp, StateName), state); err != nil {
		return err
	}
	if err := syncDir(w.tmp); err != nil {
		return err
	}
	if err := CheckTarget(w.dir); err != nil {
		return err
	}
	err := unix.Renameat2(unix.AT_FDCWD, w.tmp, unix.AT_FDCWD, w.dir, unix.RENAME_NOREPLACE)
	switch {
	case err == nil:
	case errors.Is(err, unix.EEXIST), errors.Is(err, unix.ENOTEMPTY):
		if err := unix.Renameat2(unix.AT_FDCWD, w.tmp, unix.AT_FDCWD, w.dir, unix.RENAME_EXCHANGE); err != nil {
			return fmt.Errorf("replace the old snapshot: %w", err)
		}
		// w.tmp now holds the old snapshot.
		os.RemoveAll(w.tmp)
	default:
		return err
	}
	return syncDir(filepath.Dir(filepath.Clean(w.dir)))
}

// Abort drops what was written.
func (w *Writer) Abort() {
	if w.mem != nil {
		w.mem.Close()
		w.mem = nil
	}
	os.RemoveAll(w.tmp)
}

func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
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
