package snapshot

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// writeSnapshot writes sample() with a memory file of mem into dir.
func writeSnapshot(t *testing.T, dir string, mem []byte) *File {
	t.Helper()
	f := sample()
	f.Meta.MemSize, f.Memory.Size = uint64(len(mem)), uint64(len(mem))
	f.Memory.Regions = []Region{{Size: uint64(len(mem))}}
	w, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := WriteMemory(w.Memory(), mem, []Run{{First: 0, N: uint64(len(mem)) / PageSize}}); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(Encode(f)); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestDirRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "snap")
	if _, _, err := Open(dir); !errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("Open of a missing dir: %v, want ErrNoSnapshot", err)
	}
	mem := make([]byte, 64*PageSize)
	rand.Read(mem[5*PageSize : 7*PageSize])
	want := writeSnapshot(t, dir, mem)
	f, m, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if f.Meta.Cmdline != want.Meta.Cmdline || f.Memory.Size != uint64(len(mem)) {
		t.Errorf("read back %+v", f.Meta)
	}
	got, err := MapPrivate(m, f.Memory.Size)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, mem) {
		t.Error("memory read back differs")
	}
	got[0] = 1 // copy-on-write: the file stays as it was
	if b, _ := os.ReadFile(filepath.Join(dir, MemoryName)); b[0] != 0 {
		t.Error("a write to the private mapping reached the file")
	}

	// A second snapshot replaces the first; the old directory's files are
	// gone and nothing temporary is left.
	rand.Read(mem[:PageSize])
	writeSnapshot(t, dir, mem)
	ents, _ := os.ReadDir(filepath.Dir(dir))
	if len(ents) != 1 {
		t.Errorf("after replacing: %v, want only the snapshot", ents)
	}
}

// TestSparse: only non-zero pages take disk space.
func TestSparse(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "snap")
	mem := make([]byte, 4096*PageSize) // 16 MiB
	rand.Read(mem[100*PageSize : 110*PageSize])
	writeSnapshot(t, dir, mem)
	m, err := os.Open(filepath.Join(dir, MemoryName))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	alloc := Allocated(m)
	if alloc < 10*PageSize || alloc > 64*PageSize {
		t.Errorf("%d bytes allocated for 10 non-zero pages of %d", alloc, len(mem))
	}
	runs, err := DataRuns(m)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) == 0 || runs[0].First > 100 || runs[len(runs)-1].First+runs[len(runs)-1].N < 110 {
		t.Errorf("data runs %v do not cover pages 100-109", runs)
	}
}

func TestDamaged(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "snap")
	writeSnapshot(t, dir, make([]byte, 16*PageSize))
	// A memory file of the wrong length is refused: the guest would fault.
	if err := os.Truncate(filepath.Join(dir, MemoryName), int64(8*PageSize)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("short memory file: %v", err)
	}
	os.Truncate(filepath.Join(dir, MemoryName), int64(16*PageSize))
	sp := filepath.Join(dir, StateName)
	b, _ := os.ReadFile(sp)
	os.WriteFile(sp, b[:len(b)/2], 0o600)
	if _, _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("truncated state: %v", err)
	}
}

// TestTarget: a directory that is not a snapshot is never replaced, and a
// writer that dies leaves nothing a reader would take for a snapshot.
func TestTarget(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "snap")
	os.Mkdir(dir, 0o700)
	os.WriteFile(filepath.Join(dir, "precious"), []byte("x"), 0o600)
	if _, err := Create(dir); err == nil || !strings.Contains(err.Error(), "precious") {
		t.Fatalf("Create over a foreign directory: %v", err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	os.Mkdir(empty, 0o700)
	if _, _, err := Open(empty); !errors.Is(err, ErrNoSnapshot) {
		t.Errorf("Open of an empty dir: %v", err)
	}
	w, err := Create(empty)
	if err != nil {
		t.Fatal(err)
	}
	w.Memory().Write([]byte("half a snapshot"))
	// Killed here: no Commit. The target is untouched.
	if _, _, err := Open(empty); !errors.Is(err, ErrNoSnapshot) {
		t.Errorf("Open after an interrupted write: %v", err)
	}
	w.Abort()
}

func TestMergeRuns(t *testing.T) {
	got := MergeRuns([]Run{{0, 2}, {10, 5}}, []Run{{1, 3}, {12, 1}, {20, 1}})
	want := []Run{{0, 4}, {10, 5}, {20, 1}}
	if len(got) != len(want) {
		t.Fatalf("%v, want %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%v, want %v", got, want)
		}
	}
}

func TestPresentPages(t *testing.T) {
	mem, err := MapPrivate(mustTemp(t, 32*PageSize), 32*PageSize)
	if err != nil {
		t.Fatal(err)
	}
	mem[3*PageSize] = 1
	mem[4*PageSize] = 1
	runs, err := PresentPages(mem)
	if err != nil {
		t.Skipf("no /proc/self/pagemap: %v", err)
	}
	if len(runs) != 1 || runs[0] != (Run{3, 2}) {
		t.Errorf("present %v, want pages 3-4", runs)
	}
}

func mustTemp(t *testing.T, size uint64) *os.File {
	f, err := os.CreateTemp(t.TempDir(), "mem")
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(int64(size))
	t.Cleanup(func() { f.Close() })
	return f
}

// TestCommitByDescriptor: after Create the writer needs no path, as in a
// sandboxed process: with the parent directory moved elsewhere, the
// snapshot still lands in it. A target that Create did not check (made
// since) is not replaced.
func TestCommitByDescriptor(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "a", "snap")
	os.Mkdir(filepath.Join(root, "a"), 0o700)
	w, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(root, "a"), filepath.Join(root, "b")); err != nil {
		t.Fatal(err)
	}
	mem := make([]byte, 8*PageSize)
	mem[3*PageSize] = 7
	f := sample()
	f.Meta.MemSize, f.Memory.Size = uint64(len(mem)), uint64(len(mem))
	f.Memory.Regions = []Region{{Size: uint64(len(mem))}}
	if _, err := WriteMemory(w.Memory(), mem, []Run{{First: 0, N: 8}}); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(Encode(f)); err != nil {
		t.Fatal(err)
	}
	got, m, err := Open(filepath.Join(root, "b", "snap"))
	if err != nil {
		t.Fatalf("the snapshot is not where the parent went: %v", err)
	}
	m.Close()
	if got.Memory.Size != uint64(len(mem)) {
		t.Errorf("memory size %d", got.Memory.Size)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "b")); len(ents) != 1 {
		t.Errorf("left behind: %v", ents)
	}

	// A directory that appeared after Create is someone else's.
	dir2 := filepath.Join(root, "snap2")
	w, err = Create(dir2)
	if err != nil {
		t.Fatal(err)
	}
	os.Mkdir(dir2, 0o700)
	os.WriteFile(filepath.Join(dir2, StateName), []byte("theirs"), 0o600)
	if err := w.Commit(Encode(f)); err == nil || !strings.Contains(err.Error(), "changed") {
		t.Errorf("Commit over a directory made since Create: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir2, StateName)); string(b) != "theirs" {
		t.Error("Commit replaced a directory it had not checked")
	}
	if ents, _ := os.ReadDir(root); len(ents) != 2 {
		t.Errorf("after the refused commit: %v, want b and snap2 only", ents)
	}
}

// TestOpenRefuses: what another user could have put in place, and what is
// not a snapshot's file, is refused with one line naming the path (a
// FormatError: bad input), never followed, and never blocks.
func TestOpenRefuses(t *testing.T) {
	const other = 54321 // a uid that is neither ours nor root
	root := os.Geteuid() == 0
	size := 4 * PageSize
	tests := []struct {
		name     string
		needRoot bool                           // chown to another uid
		setup    func(t *testing.T, dir string) // on a good snapshot in dir
		open     string                         // what to Open, relative to dir's parent; "" is dir
		path     string                         // the path the error names, relative to dir
		want     string
	}{
		{name: "dir is a symlink", setup: func(t *testing.T, dir string) {
			must(t, os.Symlink(dir, dir+"-link"))
		}, open: "snap-link", path: "../snap-link", want: "symbolic link"},
		{name: "dir is a file", setup: func(t *testing.T, dir string) {
			must(t, os.WriteFile(dir+"-file", nil, 0o600))
		}, open: "snap-file", path: "../snap-file", want: "not a directory"},
		{name: "memory is a symlink", setup: func(t *testing.T, dir string) {
			other := filepath.Join(filepath.Dir(dir), "secret")
			must(t, os.WriteFile(other, make([]byte, size), 0o600))
			replace(t, filepath.Join(dir, MemoryName), func(p string) error { return os.Symlink(other, p) })
		}, path: MemoryName, want: "symbolic link"},
		{name: "state is a symlink", setup: func(t *testing.T, dir string) {
			must(t, os.Rename(filepath.Join(dir, StateName), dir+"-state"))
			must(t, os.Symlink(dir+"-state", filepath.Join(dir, StateName)))
		}, path: StateName, want: "symbolic link"},
		{name: "state is a FIFO", setup: func(t *testing.T, dir string) {
			replace(t, filepath.Join(dir, StateName), func(p string) error { return unix.Mkfifo(p, 0o600) })
		}, path: StateName, want: "not a regular file"},
		{name: "memory is a FIFO", setup: func(t *testing.T, dir string) {
			replace(t, filepath.Join(dir, MemoryName), func(p string) error { return unix.Mkfifo(p, 0o600) })
		}, path: MemoryName, want: "not a regular file"},
		{name: "memory is a directory", setup: func(t *testing.T, dir string) {
			replace(t, filepath.Join(dir, MemoryName), func(p string) error { return os.Mkdir(p, 0o700) })
		}, path: MemoryName, want: "not a regular file"},
		{name: "state is empty", setup: func(t *testing.T, dir string) {
			must(t, os.Truncate(filepath.Join(dir, StateName), 0))
		}, path: StateName, want: "state: empty (not a snapshot)"},
		{name: "dir writable by others", setup: func(t *testing.T, dir string) {
			must(t, os.Chmod(dir, 0o777))
		}, want: "writable by group or others"},
		{name: "dir sticky and writable by others", setup: func(t *testing.T, dir string) {
			must(t, os.Chmod(dir, 0o1777|os.ModeSticky))
		}, want: "writable by group or others"},
		{name: "state writable by group", setup: func(t *testing.T, dir string) {
			must(t, os.Chmod(filepath.Join(dir, StateName), 0o620))
		}, path: StateName, want: "writable by group or others"},
		{name: "memory writable by others", setup: func(t *testing.T, dir string) {
			must(t, os.Chmod(filepath.Join(dir, MemoryName), 0o602))
		}, path: MemoryName, want: "writable by group or others"},
		{name: "dir owned by another user", needRoot: true, setup: func(t *testing.T, dir string) {
			must(t, os.Chown(dir, other, other))
		}, want: "owned by uid 54321"},
		{name: "state owned by another user", needRoot: true, setup: func(t *testing.T, dir string) {
			must(t, os.Chown(filepath.Join(dir, StateName), other, other))
		}, path: StateName, want: "owned by uid 54321"},
		{name: "memory owned by another user", needRoot: true, setup: func(t *testing.T, dir string) {
			must(t, os.Chown(filepath.Join(dir, MemoryName), other, other))
		}, path: MemoryName, want: "owned by uid 54321"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.needRoot && !root {
				t.Skip("needs root to give a file to another uid")
			}
			dir := filepath.Join(t.TempDir(), "snap")
			writeSnapshot(t, dir, make([]byte, size))
			tt.setup(t, dir)
			target := dir
			if tt.open != "" {
				target = filepath.Join(filepath.Dir(dir), tt.open)
			}
			done := make(chan error, 1)
			go func() {
				_, m, err := Open(target)
				if m != nil {
					m.Close()
				}
				done <- err
			}()
			var err error
			select {
			case err = <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("Open blocked")
			}
			var fe *FormatError
			path := filepath.Join(dir, tt.path)
			if !errors.As(err, &fe) || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), path) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("Open: %v (%T), want one line starting %s and saying %q", err, err, path, tt.want)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// replace removes path and makes something else there with mk.
func replace(t *testing.T, path string, mk func(string) error) {
	t.Helper()
	must(t, os.Remove(path))
	must(t, mk(path))
}

// TestOpenWhileReplaced: a snapshot committed over DIR while Open reads it
// (Commit empties the old directory Open holds) is read whole, state and
// memory both from the new one, never an error or a mix.
func TestOpenWhileReplaced(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "snap")
	old := make([]byte, 4*PageSize)
	writeSnapshot(t, dir, old)
	tests := []struct {
		name     string
		replaces int // how many Opens find DIR replaced
		wantErr  string
	}{
		{"once", 1, ""},
		{"every time", 100, "replaced again and again"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := 0
			var last byte
			testHookOpened = func() {
				if n++; n <= tt.replaces {
					last = byte(n)
					mem := make([]byte, uint64(last)*PageSize) // each a new size, and so a new state
					mem[0] = last
					writeSnapshot(t, dir, mem)
				}
			}
			defer func() { testHookOpened = nil }()
			f, m, err := Open(dir)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Open: %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open while replaced: %v", err)
			}
			defer m.Close()
			b := make([]byte, 1)
			if _, err := m.ReadAt(b, 0); err != nil || f.Memory.Size != uint64(last)*PageSize || b[0] != last {
				t.Errorf("state of %d bytes, memory starting %d (%v): want both from snapshot %d", f.Memory.Size, b[0], err, last)
			}
		})
	}
}
