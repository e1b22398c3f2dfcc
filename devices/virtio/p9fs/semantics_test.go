package p9fs

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// The 9p semantics other tools got wrong (vmtest#88, kata-containers#9700),
// each through p9's client.

func TestUnlinkWhileOpen(t *testing.T) {
	share, _ := tree(t)
	root := serve(t, share, false)
	f, _, _, err := walk(t, root).Create("tmp", p9.ReadWrite, 0o644, p9.NoUID, p9.NoGID)
	must(t, err)
	if _, err := f.WriteAt([]byte("before"), 0); err != nil {
		t.Fatal(err)
	}
	must(t, root.UnlinkAt("tmp", 0))
	if _, err := os.Lstat(filepath.Join(share, "tmp")); !os.IsNotExist(err) {
		t.Fatalf("tmp still on the host: %v", err)
	}
	_, _, attr, err := f.GetAttr(p9.AttrMaskAll)
	must(t, err)
	if attr.Size != 6 || attr.NLink != 0 {
		t.Errorf("fstat after unlink: size %d nlink %d", attr.Size, attr.NLink)
	}
	if _, err := f.WriteAt([]byte(" after"), 6); err != nil {
		t.Fatalf("write after unlink: %v", err)
	}
	if got := readAll(t, f); got != "before after" {
		t.Errorf("read after unlink: %q", got)
	}
	// ftruncate and fchmod through the open fid (the vendored server's
	// patch: the original refused any Tsetattr on a deleted file).
	must(t, f.SetAttr(p9.SetAttrMask{Size: true}, p9.SetAttr{Size: 3}))
	must(t, f.SetAttr(p9.SetAttrMask{Permissions: true}, p9.SetAttr{Permissions: 0o600}))
	_, _, attr, err = f.GetAttr(p9.AttrMaskAll)
	must(t, err)
	if attr.Size != 3 || attr.Mode.Permissions() != 0o600 {
		t.Errorf("after ftruncate(3) and fchmod(0600) of the unlinked file: size %d mode %o", attr.Size, attr.Mode.Permissions())
	}
	if got := readAll(t, f); got != "bef" {
		t.Errorf("read after ftruncate: %q", got)
	}
}

func TestRenameOverOpenFile(t *testing.T) {
	share, _ := tree(t)
	write(t, filepath.Join(share, "new"), "new contents")
	root := serve(t, share, false)
	old := opened(t, root, p9.ReadOnly, "hello")
	must(t, root.RenameAt("new", walk(t, root), "hello"))
	if got := readAll(t, old); got != "hello from the host\n" {
		t.Errorf("the open file now reads %q", got)
	}
	if got := readAll(t, opened(t, root, p9.ReadOnly, "hello")); got != "new contents" {
		t.Errorf("the name now reads %q", got)
	}
}

func TestAppend(t *testing.T) {
	share, _ := tree(t)
	root := serve(t, share, false)
	f := opened(t, root, p9.WriteOnly|p9.OpenFlags(unix.O_APPEND), "hello")
	// The host appends meanwhile; the guest's offset 0 is stale.
	hf, err := os.OpenFile(filepath.Join(share, "hello"), os.O_APPEND|os.O_WRONLY, 0)
	must(t, err)
	hf.WriteString("host\n")
	hf.Close()
	if _, err := f.WriteAt([]byte("guest\n"), 0); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(share, "hello"))
	if string(b) != "hello from the host\nhost\nguest\n" {
		t.Errorf("after O_APPEND writes: %q", b)
	}
}

func TestReaddir10000(t *testing.T) {
	share, _ := tree(t)
	big := filepath.Join(share, "big")
	must(t, os.Mkdir(big, 0o755))
	const n = 10000
	for i := 0; i < n; i++ {
		f, err := os.Create(filepath.Join(big, fmt.Sprintf("file-%05d", i)))
		must(t, err)
		f.Close()
	}
	d := opened(t, serve(t, share, true), p9.ReadOnly, "big")
	seen := map[string]bool{}
	var off uint64
	for calls := 0; ; calls++ {
		if calls > n {
			t.Fatal("readdir does not end")
		}
		ents, err := d.Readdir(off, 8192)
		must(t, err)
		if len(ents) == 0 {
			break
		}
		for _, e := range ents {
			if seen[e.Name] {
				t.Fatalf("%s listed twice", e.Name)
			}
			seen[e.Name] = true
		}
		off = ents[len(ents)-1].Offset
	}
	if len(seen) != n+2 { // and . and ..
		t.Errorf("listed %d entries, want %d", len(seen), n+2)
	}
}

// TestXattrReadThrough: p9's client has no xattr calls, so the backend's
// File is driven directly.
func TestXattrReadThrough(t *testing.T) {
	share, _ := tree(t)
	p := filepath.Join(share, "hello")
	if err := unix.Setxattr(p, "user.color", []byte("blue"), 0); err != nil {
		t.Skipf("the test directory's file system has no user xattrs: %v", err)
	}
	_, f, err := backend(t, share, false).Walk([]string{"hello"})
	must(t, err)
	defer f.Close()
	v, err := f.GetXattr("user.color")
	if err != nil || string(v) != "blue" {
		t.Errorf("getxattr: %q %v", v, err)
	}
	names, err := f.ListXattrs()
	if err != nil || len(names) != 1 || names[0] != "user.color" {
		t.Errorf("listxattr: %q %v", names, err)
	}
	must(t, f.SetXattr("user.size", []byte("L"), 0))
	if err := f.SetXattr("security.capability", []byte{1}, 0); err == nil {
		t.Error("security.capability was settable")
	}
	if err := f.SetXattr("trusted.x", []byte{1}, 0); err == nil {
		t.Error("trusted.x was settable")
	}
}
