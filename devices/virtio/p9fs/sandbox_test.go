package p9fs

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hugelgupf/p9/p9"

	"github.com/microvm-dev/microvm/internal/sandbox"
)

// TestSandboxedBackend runs every kind of 9P request against a writable
// share from inside the VMM's sandbox: its seccomp filter with the share
// groups, and as root its jail, an empty chroot with no /proc. Any call
// the backend makes that the filter lacks kills the child with SIGSYS; any
// absolute path it still needs fails in the jail. The sandbox is for good,
// so the work runs in a child (this test binary again).
func TestSandboxedBackend(t *testing.T) {
	if dir := os.Getenv("P9FS_SANDBOX_SHARE"); dir != "" {
		sandboxedChild(t, dir, os.Getenv("P9FS_SANDBOX_JAIL"))
		return
	}
	share := t.TempDir()
	write(t, filepath.Join(share, "hello"), "hello from the host\n")
	jail := ""
	if os.Geteuid() == 0 {
		jail = filepath.Join(t.TempDir(), "jail")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSandboxedBackend$", "-test.v")
	cmd.Env = append(os.Environ(), "P9FS_SANDBOX_SHARE="+share, "P9FS_SANDBOX_JAIL="+jail)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestSandboxedBackend") {
		t.Fatalf("sandboxed child (jail %q): %v\n%s", jail, err, out)
	}
	// The child's changes are on the host.
	if b, err := os.ReadFile(filepath.Join(share, "d", "renamed")); err != nil || string(b) != "0123" {
		t.Errorf("renamed file: %q %v", b, err)
	}
	if l, err := os.Readlink(filepath.Join(share, "link")); err != nil || l != "hello" {
		t.Errorf("symlink: %q %v", l, err)
	}
}

func sandboxedChild(t *testing.T, dir, jail string) {
	root := serve(t, dir, false)
	// p9's client has no xattr requests: those go to the backend directly.
	direct, err := Open(dir, false)
	must(t, err)
	if _, err := sandbox.Apply(sandbox.Options{Jail: jail, Needs: sandbox.Needs{
		Shares: true, WritableShares: true, MaxFileSize: sandbox.NoFileSizeLimit, ExtraFiles: MaxFiles,
	}}); err != nil {
		t.Fatalf("sandbox: %v", err)
	}
	hello := opened(t, root, p9.ReadOnly, "hello")
	if s := readAll(t, hello); s != "hello from the host\n" {
		t.Fatalf("read: %q", s)
	}
	_, err = root.Mkdir("d", 0o755, p9.NoUID, 0)
	must(t, err)
	d := walk(t, root, "d")
	// Tlcreate turns the fid it is sent on into the new file: a clone.
	nf, _, _, err := walk(t, d).Create("f", p9.ReadWrite, 0o644, p9.NoUID, 0)
	must(t, err)
	_, err = nf.WriteAt([]byte("0123456789"), 0)
	must(t, err)
	must(t, nf.FSync())
	f := walk(t, d, "f")
	must(t, f.SetAttr(p9.SetAttrMask{Permissions: true, Size: true, ATime: true, MTime: true},
		p9.SetAttr{Permissions: 0o600, Size: 4}))
	_, _, attr, err := f.GetAttr(p9.AttrMaskAll)
	must(t, err)
	if attr.Size != 4 || attr.Mode.Permissions() != 0o600 {
		t.Errorf("after setattr: size %d mode %o", attr.Size, attr.Mode.Permissions())
	}
	droot, err := direct.Attach()
	must(t, err)
	_, xf, err := droot.Walk([]string{"d", "f"})
	must(t, err)
	must(t, xf.SetXattr("user.color", []byte("blue"), 0))
	if v, err := xf.GetXattr("user.color"); err != nil || string(v) != "blue" {
		t.Errorf("getxattr: %q %v", v, err)
	}
	if names, err := xf.ListXattrs(); err != nil || len(names) != 1 {
		t.Errorf("listxattr: %q %v", names, err)
	}
	must(t, xf.RemoveXattr("user.color"))
	must(t, xf.Close())
	must(t, droot.Close())
	must(t, d.Link(f, "hard"))
	must(t, d.RenameAt("f", d, "renamed"))
	must(t, d.UnlinkAt("hard", 0))
	_, err = root.Symlink("hello", "link", p9.NoUID, 0)
	must(t, err)
	if l, err := walk(t, root, "link").Readlink(); err != nil || l != "hello" {
		t.Errorf("readlink: %q %v", l, err)
	}
	dd := walk(t, root, "d")
	_, _, err = dd.Open(p9.ReadOnly)
	must(t, err)
	if ents, err := dd.Readdir(0, 64<<10); err != nil || len(ents) == 0 {
		t.Errorf("readdir: %v %v", ents, err)
	}
	_, err = root.StatFS()
	must(t, err)
	// Unlink while open, then I/O through the open fid.
	gone, _, _, err := walk(t, d).Create("gone", p9.ReadWrite, 0o644, p9.NoUID, 0)
	must(t, err)
	must(t, d.UnlinkAt("gone", 0))
	_, err = gone.WriteAt([]byte("x"), 0)
	must(t, err)
	_, _, _, err = gone.GetAttr(p9.AttrMaskAll)
	must(t, err)
}
