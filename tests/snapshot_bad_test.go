package tests

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// copySnapshot makes a copy of snapshot dir to mutate: a new state file
// and the same memory file (a hard link: it is 256 MiB long, mostly holes).
func copySnapshot(t *testing.T, dir, name string) string {
	t.Helper()
	cp := filepath.Join(filepath.Dir(dir), name)
	if err := os.Mkdir(cp, 0o700); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cp, "state"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, "memory"), filepath.Join(cp, "memory")); err != nil {
		t.Fatal(err)
	}
	return cp
}

// dirState is what a refused restore must leave alone: the names and
// contents of a snapshot directory's state files, and a disk image.
func dirState(t *testing.T, dir string) string {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	var s []string
	for _, e := range ents {
		st, _ := os.Stat(filepath.Join(dir, e.Name()))
		s = append(s, e.Name(), st.ModTime().String())
		if e.Name() == "state" {
			s = append(s, fileSHA(t, filepath.Join(dir, e.Name())))
		}
	}
	return strings.Join(s, " ")
}

// TestLinuxSnapshotBadInput: snapshots that are damaged, of another format
// version, of another machine (memory, vCPUs) or whose disk changed are
// refused by --restore with one line and exit 2, before any guest runs,
// touching neither the snapshot nor the disk. --snapshot refuses a damaged
// one too (it would hide the damage), but makes one again for a changed
// disk.
func TestLinuxSnapshotBadInput(t *testing.T) {
	linuxArtifacts(t)
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "snap")
	diskDir := filepath.Join(tmp, "disk")
	os.Mkdir(diskDir, 0o700)
	disk, _ := randomFile(t, diskDir, "disk.img", 64<<10)
	if r, b := snapRun(t, []string{"--snapshot", dir, "--disk", disk}, "true"); r.code != 0 || path(b) != "saved" {
		t.Fatalf("saving run: exit %d, snapshot %+v; stderr:\n%s", r.code, b.Snapshot, r.stderr)
	}
	diskBefore := dirState(t, diskDir) // disk.img's mtime
	diskSum := fileSHA(t, disk)
	state := func(d string) string { return filepath.Join(d, "state") }
	cases := []struct {
		name  string
		dir   func() string
		flags []string
		want  string
	}{
		{"truncated state", func() string {
			d := copySnapshot(t, dir, "truncated")
			b, _ := os.ReadFile(state(d))
			os.WriteFile(state(d), b[:len(b)/2], 0o600)
			return d
		}, nil, "truncated"},
		{"corrupted state", func() string {
			d := copySnapshot(t, dir, "corrupted")
			b, _ := os.ReadFile(state(d))
			b[len(b)/2] ^= 0x40
			os.WriteFile(state(d), b, 0o600)
			return d
		}, nil, "checksum mismatch"},
		{"wrong version", func() string {
			d := copySnapshot(t, dir, "version")
			b, _ := os.ReadFile(state(d))
			binary.LittleEndian.PutUint32(b[16:], 99)
			os.WriteFile(state(d), b, 0o600)
			return d
		}, nil, "format version 99"},
		{"short memory file", func() string {
			d := copySnapshot(t, dir, "shortmem")
			m := filepath.Join(d, "memory")
			os.Remove(m)
			f, _ := os.Create(m)
			f.Truncate(128 << 20)
			f.Close()
			return d
		}, nil, "damaged"},
		{"no state file", func() string {
			d := copySnapshot(t, dir, "nostate")
			os.Remove(state(d))
			return d
		}, nil, "not a microvm snapshot"},
		{"memory mismatch", func() string { return dir }, []string{"--memory", "320M"}, "256 MiB of memory; this machine has 320 MiB"},
		{"vCPU mismatch", func() string { return dir }, []string{"--cpus", "2"}, "1 vCPUs; this machine has 2"},
		{"missing", func() string { return filepath.Join(tmp, "nothing-here") }, nil, "no snapshot there"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := c.dir()
			before := dirState(t, d)
			args := append([]string{"--restore", d, "--disk", disk}, c.flags...)
			r := linuxCmd(t, linuxLimit, "run", append(append(args, "--"), "true")...)
			checkRefused(t, r, c.want)
			if after := dirState(t, d); after != before {
				t.Errorf("the refused restore changed %s: %s, was %s", d, after, before)
			}
		})
	}
	t.Run("damaged, with --snapshot", func(t *testing.T) {
		d := filepath.Join(tmp, "corrupted")
		before := dirState(t, d)
		r := linuxCmd(t, linuxLimit, "run", "--snapshot", d, "--disk", disk, "--", "true")
		checkRefused(t, r, "checksum mismatch")
		if dirState(t, d) != before {
			t.Error("--snapshot replaced a damaged snapshot instead of refusing it")
		}
	})
	t.Run("not a snapshot directory", func(t *testing.T) {
		d := filepath.Join(tmp, "precious")
		os.Mkdir(d, 0o700)
		os.WriteFile(filepath.Join(d, "notes.txt"), []byte("mine"), 0o600)
		r := linuxCmd(t, linuxLimit, "run", "--snapshot", d, "--", "true")
		checkRefused(t, r, "not a microvm snapshot")
		if b, err := os.ReadFile(filepath.Join(d, "notes.txt")); err != nil || string(b) != "mine" {
			t.Error("--snapshot touched a directory that is not a snapshot")
		}
	})
	if got := fileSHA(t, disk); got != diskSum || dirState(t, diskDir) != diskBefore {
		t.Fatal("a refused restore touched the disk image")
	}
	t.Run("changed disk", func(t *testing.T) {
		if err := os.WriteFile(disk, make([]byte, 64<<10), 0o644); err != nil {
			t.Fatal(err)
		}
		sum := fileSHA(t, disk)
		r := linuxCmd(t, linuxLimit, "run", "--restore", dir, "--disk", disk, "--", "true")
		checkRefused(t, r, "changed since the snapshot")
		if fileSHA(t, disk) != sum {
			t.Error("the refused restore wrote the disk")
		}
		r2, b := snapRun(t, []string{"--snapshot", dir, "--disk", disk}, "true")
		if r2.code != 0 || path(b) != "saved" {
			t.Errorf("--snapshot with the changed disk: exit %d, snapshot %+v, want it made again", r2.code, b.Snapshot)
		}
	})
}

// checkRefused: exit 2, one line on stderr saying why, no panic.
func checkRefused(t *testing.T, r result, want string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	if r.code != 2 || len(lines) != 1 || !strings.HasPrefix(lines[0], "microvm: ") || !strings.Contains(r.stderr, want) || strings.Contains(r.stderr, "panic") {
		t.Errorf("exit %d, stderr %q; want exit 2 and one line saying %q", r.code, r.stderr, want)
	}
}
