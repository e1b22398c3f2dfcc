package p9fs

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// tree makes dir/share (served) beside dir/outside/secret (never to be
// reached) and returns the share's path.
func tree(t *testing.T) (share, outside string) {
	t.Helper()
	dir := t.TempDir()
	share, outside = filepath.Join(dir, "share"), filepath.Join(dir, "outside")
	for _, d := range []string{share, outside, filepath.Join(share, "sub")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write(t, filepath.Join(outside, "secret"), "outside")
	write(t, filepath.Join(share, "hello"), "hello from the host\n")
	return share, outside
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// serve serves share through p9's server to p9's client over a pipe and
// returns the attached root.
func serve(t *testing.T, dir string, ro bool) p9.File {
	t.Helper()
	s, err := Open(dir, ro)
	if err != nil {
		t.Fatal(err)
	}
	cs, ss := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = p9.NewServer(s).Handle(ss, ss)
	}()
	c, err := p9.NewClient(cs, p9.WithMessageSize(256<<10))
	if err != nil {
		t.Fatal(err)
	}
	root, err := c.Attach("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		<-done
		s.Close()
		if n := s.files.Load(); n != 0 {
			t.Errorf("%d files still open after the connection ended", n)
		}
	})
	return root
}

func walk(t *testing.T, f p9.File, names ...string) p9.File {
	t.Helper()
	_, nf, err := f.Walk(names)
	if err != nil {
		t.Fatalf("walk %q: %v", names, err)
	}
	return nf
}

// opened walks to names and opens the file with flags.
func opened(t *testing.T, root p9.File, flags p9.OpenFlags, names ...string) p9.File {
	t.Helper()
	f := walk(t, root, names...)
	if _, _, err := f.Open(flags); err != nil {
		t.Fatalf("open %q: %v", names, err)
	}
	return f
}

// backend attaches to dir without p9's server, to drive the backend's
// Files with what p9's decoder would not let through.
func backend(t *testing.T, dir string, ro bool) p9.File {
	t.Helper()
	s, err := Open(dir, ro)
	must(t, err)
	r, err := s.Attach()
	must(t, err)
	t.Cleanup(func() { r.Close(); s.Close() })
	return r
}

func readAll(t *testing.T, f p9.File) string {
	t.Helper()
	buf := make([]byte, 4096)
	n, err := f.ReadAt(buf, 0)
	if err != nil && err != io.EOF {
		t.Fatalf("read: %v", err)
	}
	return string(buf[:n])
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: got %v, want %v", what, err, want)
	}
}

func TestReadHostFile(t *testing.T) {
	share, _ := tree(t)
	f := opened(t, serve(t, share, true), p9.ReadOnly, "hello")
	if got := readAll(t, f); got != "hello from the host\n" {
		t.Errorf("read %q", got)
	}
}

// TestEscapes walks every way out of the share the issue lists; none may
// reach outside/secret.
func TestEscapes(t *testing.T) {
	share, outside := tree(t)
	must(t, os.Symlink("/", filepath.Join(share, "toroot")))
	must(t, os.Symlink("../outside", filepath.Join(share, "rel")))
	must(t, os.Symlink(outside, filepath.Join(share, "abs")))
	must(t, os.Symlink("/proc/self/root", filepath.Join(share, "procroot")))
	root := serve(t, share, false)
	for _, names := range [][]string{
		{".."},
		{"sub", ".."},
		{"/"},
		{outside},
		{"/etc/passwd"},
		{"../outside/secret"},
		{"toroot", "etc"},
		{"rel", "secret"},
		{"abs", "secret"},
		{"procroot", "etc"},
		{"sub", "..", "..", "outside", "secret"},
	} {
		if _, _, err := root.Walk(names); err == nil {
			t.Errorf("walk %q succeeded", names)
		}
	}
	// A link walked to is a link: it cannot be opened, only read.
	for _, name := range []string{"toroot", "rel", "abs", "procroot"} {
		l := walk(t, root, name)
		if _, _, err := l.Open(p9.ReadOnly); err == nil {
			t.Errorf("open of link %s succeeded", name)
		}
		if target, err := l.Readlink(); err != nil || target == "" {
			t.Errorf("readlink %s: %q %v", name, target, err)
		}
	}
	// A hard link to a link is a link, never the file it names.
	must(t, os.Symlink(filepath.Join(outside, "secret"), filepath.Join(share, "tosecret")))
	if err := root.Link(walk(t, root, "tosecret"), "hard"); err == nil {
		if fi, err := os.Lstat(filepath.Join(share, "hard")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("hard link of a symlink: %v %v", fi, err)
		}
	}
	// Absolute and multi-component names in creating requests.
	for _, name := range []string{"/tmp/x", "../x", "a/b", ".", ".."} {
		if _, _, _, err := root.Create(name, p9.ReadWrite, 0o644, p9.NoUID, p9.NoGID); err == nil {
			t.Errorf("create %q succeeded", name)
		}
		if _, err := root.Mkdir(name, 0o755, p9.NoUID, p9.NoGID); err == nil {
			t.Errorf("mkdir %q succeeded", name)
		}
	}
	// The backend refuses them on its own, without the server's checks.
	r := backend(t, share, false)
	for _, name := range []string{"..", "/", "a/b", "toroot/etc"} {
		if _, _, err := r.Walk([]string{name}); err == nil {
			t.Errorf("backend walk %q succeeded", name)
		}
	}
}

// TestSwappedMidWalk swaps a directory for a symlink to the outside while
// the guest walks through it, and keeps a fid on the directory it walked.
func TestSwappedMidWalk(t *testing.T) {
	share, outside := tree(t)
	d := filepath.Join(share, "d")
	must(t, os.Mkdir(d, 0o755))
	write(t, filepath.Join(d, "secret"), "inside")
	root := serve(t, share, false)
	held := walk(t, root, "d")
	// Swap: the directory moves away, a link to the outside takes its name.
	must(t, os.Rename(d, filepath.Join(share, "moved")))
	must(t, os.Symlink(outside, d))
	f := opened(t, held, p9.ReadOnly, "secret")
	if got := readAll(t, f); got != "inside" {
		t.Fatalf("the held fid reached %q", got)
	}
	// A racing swap, many times: a walk sees the directory or fails, never
	// the outside.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			os.Remove(d)
			if i%2 == 0 {
				os.Symlink(outside, d)
			} else {
				os.Symlink("moved", d)
				os.Remove(d)
				os.Rename(filepath.Join(share, "moved"), d)
				os.Rename(d, filepath.Join(share, "moved"))
			}
		}
	}()
	for i := 0; i < 2000; i++ {
		_, f, err := root.Walk([]string{"d", "secret"})
		if err != nil {
			continue
		}
		if _, _, err := f.Open(p9.ReadOnly); err == nil {
			if got := readAll(t, f); got != "inside" {
				t.Fatalf("walk %d reached %q", i, got)
			}
		}
		f.Close()
	}
	close(stop)
	wg.Wait()
}

// TestKernelInterfaces: with / shared, /proc and /sys are empty
// directories the guest cannot enter or change.
func TestKernelInterfaces(t *testing.T) {
	root := serve(t, "/", true)
	for _, names := range [][]string{{"proc", "self"}, {"sys", "kernel"}, {"proc", "self", "root"}, {"proc", "1"}} {
		_, _, err := root.Walk(names)
		wantErr(t, fmt.Sprintf("walk %q", names), err, linux.ENOENT)
	}
	proc := opened(t, root, p9.ReadOnly, "proc")
	if ents, err := proc.Readdir(0, 4096); err != nil || len(ents) != 0 {
		t.Errorf("/proc lists %d entries (%v), want none", len(ents), err)
	}
	if _, err := Open("/proc/self", true); err == nil {
		t.Error("sharing /proc/self succeeded")
	}
	// Writable, the mount point still refuses changes.
	rw := serve(t, "/", false)
	_, err := walk(t, rw, "sys").Mkdir("x", 0o755, p9.NoUID, p9.NoGID)
	wantErr(t, "mkdir in /sys", err, linux.EACCES)
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Lstat(path)
	must(t, err)
	return fi.Mode()
}

func TestNoSetuid(t *testing.T) {
	share, _ := tree(t)
	must(t, os.Chmod(filepath.Join(share, "sub"), 0o2775))
	root := serve(t, share, false)
	// p9's client turns the directory's fid into the new file's: clone it.
	f, _, _, err := walk(t, root).Create("x", p9.ReadWrite, 0o6755, p9.NoUID, p9.NoGID)
	must(t, err)
	f.Close()
	x := walk(t, root, "x")
	must(t, x.SetAttr(p9.SetAttrMask{Permissions: true}, p9.SetAttr{Permissions: 0o6777}))
	sub := walk(t, root, "sub")
	_, err = sub.Mkdir("y", 0o2777, p9.NoUID, p9.NoGID)
	must(t, err)
	// The backend itself, given the bits (p9's decoder already drops them).
	r := backend(t, share, false)
	nf, _, _, err := r.Create("z", p9.ReadWrite, 0o4755|p9.ModeRegular, p9.NoUID, p9.NoGID)
	must(t, err)
	nf.Close()
	_, zf, err := r.Walk([]string{"z"})
	must(t, err)
	must(t, zf.SetAttr(p9.SetAttrMask{Permissions: true}, p9.SetAttr{Permissions: 0o6755}))
	zf.Close()
	_, err = r.Mkdir("w", 0o6755, p9.NoUID, p9.NoGID)
	must(t, err)
	for _, p := range []string{"x", "sub/y", "z", "w"} {
		if m := mode(t, filepath.Join(share, p)); m&(os.ModeSetuid|os.ModeSetgid) != 0 {
			t.Errorf("%s has mode %v", p, m)
		}
	}
	if m := mode(t, filepath.Join(share, "x")); m.Perm() != 0o777 {
		t.Errorf("x: chmod 0777 gave %v", m)
	}
}

func TestMknod(t *testing.T) {
	share, _ := tree(t)
	root := serve(t, share, false)
	for _, m := range []p9.FileMode{p9.ModeCharacterDevice, p9.ModeBlockDevice} {
		_, err := root.Mknod("dev", m|0o666, 1, 3, p9.NoUID, p9.NoGID)
		wantErr(t, fmt.Sprintf("mknod %o", m), err, linux.EPERM)
	}
	if _, err := os.Lstat(filepath.Join(share, "dev")); err == nil {
		t.Error("a device node was made")
	}
	_, err := root.Mknod("fifo", p9.ModeNamedPipe|0o644, 0, 0, p9.NoUID, p9.NoGID)
	must(t, err)
	// A FIFO is never opened: it could block the server.
	_, _, err = walk(t, root, "fifo").Open(p9.ReadOnly)
	if err == nil {
		t.Error("open of a FIFO succeeded")
	}
}

// TestReadOnly sends every modifying request to a read-only share.
func TestReadOnly(t *testing.T) {
	share, _ := tree(t)
	root := serve(t, share, true)
	hello := walk(t, root, "hello")
	sub := walk(t, root, "sub")
	for what, err := range map[string]error{
		"create":     first(root.Create("n", p9.ReadWrite, 0o644, p9.NoUID, p9.NoGID)),
		"mkdir":      second(root.Mkdir("n", 0o755, p9.NoUID, p9.NoGID)),
		"symlink":    second(root.Symlink("hello", "n", p9.NoUID, p9.NoGID)),
		"link":       root.Link(hello, "n"),
		"mknod":      second(root.Mknod("n", p9.ModeNamedPipe|0o644, 0, 0, p9.NoUID, p9.NoGID)),
		"rename":     root.RenameAt("hello", sub, "n"),
		"unlink":     root.UnlinkAt("hello", 0),
		"rmdir":      root.UnlinkAt("sub", unix.AT_REMOVEDIR),
		"chmod":      hello.SetAttr(p9.SetAttrMask{Permissions: true}, p9.SetAttr{Permissions: 0o600}),
		"chown":      hello.SetAttr(p9.SetAttrMask{UID: true}, p9.SetAttr{UID: 1}),
		"truncate":   hello.SetAttr(p9.SetAttrMask{Size: true}, p9.SetAttr{Size: 0}),
		"utimes":     hello.SetAttr(p9.SetAttrMask{MTime: true}, p9.SetAttr{}),
		"open w":     openErr(walk(t, root, "hello"), p9.WriteOnly),
		"open rw":    openErr(walk(t, root, "hello"), p9.ReadWrite),
		"open trunc": openErr(walk(t, root, "hello"), p9.ReadOnly|p9.OpenFlags(unix.O_TRUNC)),
	} {
		wantErr(t, what, err, linux.EROFS)
	}
	r := backend(t, share, true)
	wantErr(t, "setxattr", r.SetXattr("user.x", []byte("1"), 0), linux.EROFS)
	wantErr(t, "removexattr", r.RemoveXattr("user.x"), linux.EROFS)
	if b, err := os.ReadFile(filepath.Join(share, "hello")); err != nil || string(b) != "hello from the host\n" {
		t.Errorf("hello changed: %q %v", b, err)
	}
	ents, _ := os.ReadDir(share)
	if len(ents) != 2 {
		t.Errorf("share has %d entries, want 2", len(ents))
	}
}

func first(_ p9.File, _ p9.QID, _ uint32, err error) error { return err }
func second(_ p9.QID, err error) error                     { return err }
func openErr(f p9.File, fl p9.OpenFlags) error {
	_, _, err := f.Open(fl)
	return err
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
