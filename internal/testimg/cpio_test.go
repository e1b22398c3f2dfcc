package testimg

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestCPIO(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "exe"), []byte("#!/bin/sh\n"), 0o700)
	os.MkdirAll(filepath.Join(dir, "tree", "sub"), 0o755)
	os.WriteFile(filepath.Join(dir, "tree", "a.txt"), []byte("a"), 0o600)
	os.WriteFile(filepath.Join(dir, "tree", "sub", "b.elf"), []byte("bbbbb"), 0o755)

	var buf bytes.Buffer
	c := NewCPIO(&buf)
	c.CharDev("/dev/console", 0o600, 5, 1)
	c.Bytes("/etc/x/y.json", 0o644, []byte("{}\n"))
	c.HostFile("/usr/bin/exe", filepath.Join(dir, "exe"))
	c.HostFile("/data", filepath.Join(dir, "tree"))
	c.Dir("/usr", 0o755) // already there: no second entry
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	ents, err := ReadCPIO(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}

	type want struct {
		mode uint32
		data string
	}
	// Every directory, made by Dir, CharDev, Bytes or HostFile, is 0755.
	wants := map[string]want{
		"dev/console":    {ModeChr | 0o600, ""},
		"etc/x/y.json":   {ModeReg | 0o644, "{}\n"},
		"usr/bin/exe":    {ModeReg | 0o755, "#!/bin/sh\n"},
		"data/a.txt":     {ModeReg | 0o644, "a"},
		"data/sub/b.elf": {ModeReg | 0o755, "bbbbb"},
	}
	for _, d := range []string{"dev", "etc", "etc/x", "usr", "usr/bin", "data", "data/sub"} {
		wants[d] = want{ModeDir | 0o755, ""}
	}
	seen := map[string]bool{}
	inos := map[uint32]bool{}
	for _, e := range ents {
		if seen[e.Name] {
			t.Errorf("%s appears twice", e.Name)
		}
		seen[e.Name] = true
		if inos[e.Ino] {
			t.Errorf("%s reuses inode %d", e.Name, e.Ino)
		}
		inos[e.Ino] = true
		w, ok := wants[e.Name]
		if !ok {
			t.Errorf("unexpected entry %q", e.Name)
			continue
		}
		if e.Mode != w.mode {
			t.Errorf("%s: mode %o, want %o", e.Name, e.Mode, w.mode)
		}
		if string(e.Data) != w.data {
			t.Errorf("%s: data %q, want %q", e.Name, e.Data, w.data)
		}
		// Parents come before children, as the kernel needs.
		if i := strings.LastIndex(e.Name, "/"); i > 0 && !seen[e.Name[:i]] {
			t.Errorf("%s comes before its directory", e.Name)
		}
		if e.Name == "dev/console" && (e.RMajor != 5 || e.RMinor != 1) {
			t.Errorf("dev/console is %d:%d, want 5:1", e.RMajor, e.RMinor)
		}
	}
	for n := range wants {
		if !seen[n] {
			t.Errorf("missing %s", n)
		}
	}

	// Cross-check with the system cpio where there is one.
	if _, err := exec.LookPath("cpio"); err == nil {
		cmd := exec.Command("cpio", "-it", "--quiet")
		cmd.Stdin = bytes.NewReader(buf.Bytes())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("cpio -it: %v: %s", err, out)
		}
		got := strings.Fields(string(out))
		if len(got) != len(wants) {
			t.Errorf("cpio -it lists %d entries, want %d: %q", len(got), len(wants), got)
		}
	}
}

// TestReadCPIO: ReadCPIO refuses what is not a whole, well-formed archive.
func TestReadCPIO(t *testing.T) {
	var buf bytes.Buffer
	c := NewCPIO(&buf)
	c.Bytes("f", 0o644, []byte("hello"))
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"truncated header", good[:50]},
		{"truncated data", good[:115]},
		{"no trailer", good[:len(good)-124]},
		{"junk after the trailer", append(append([]byte(nil), good...), 0, 0, 0, 0)},
		{"bad magic", append([]byte("070702"), good[6:]...)},
	} {
		if _, err := ReadCPIO(tc.b); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
	if ents, err := ReadCPIO(good); err != nil || len(ents) != 1 || ents[0].Name != "f" || string(ents[0].Data) != "hello" {
		t.Errorf("ReadCPIO(good) = %+v, %v", ents, err)
	}
}

// TestCPIOTree: a root filesystem keeps its symlinks (not followed: the
// one to /etc/passwd must not pull in the host's file), its permission
// bits, and leaves out what an initramfs cannot hold.
func TestCPIOTree(t *testing.T) {
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "usr/bin"), 0o755)
	os.WriteFile(filepath.Join(src, "usr/bin/su"), []byte("su"), 0o755)
	syscall.Chmod(filepath.Join(src, "usr/bin/su"), 0o4755)
	os.Mkdir(filepath.Join(src, "tmp"), 0o755)
	syscall.Chmod(filepath.Join(src, "tmp"), 0o1777)
	os.Symlink("usr/bin", filepath.Join(src, "bin"))
	os.Symlink("/etc/passwd", filepath.Join(src, "passwd"))
	if err := syscall.Mkfifo(filepath.Join(src, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	c := NewCPIO(&buf)
	c.Tree("/r", src)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	ents, err := ReadCPIO(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]CPIOEntry{}
	for _, e := range ents {
		got[e.Name] = e
	}
	want := map[string]struct {
		mode uint32
		data string
	}{
		"r/bin":        {ModeLnk | 0o777, "usr/bin"},
		"r/passwd":     {ModeLnk | 0o777, "/etc/passwd"},
		"r/usr/bin/su": {ModeReg | 0o4755, "su"},
		"r/tmp":        {ModeDir | 0o1777, ""},
	}
	for name, w := range want {
		e, ok := got[name]
		if !ok || e.Mode != w.mode || string(e.Data) != w.data {
			t.Errorf("%s: %+v (present %v), want mode %o data %q", name, e, ok, w.mode, w.data)
		}
	}
	if _, ok := got["r/fifo"]; ok {
		t.Error("the fifo was archived")
	}
}
