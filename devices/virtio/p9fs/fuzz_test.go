package p9fs

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// tee records what p9's client sends.
type tee struct {
	net.Conn
	mu  sync.Mutex
	out bytes.Buffer
}

func (c *tee) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.out.Write(p)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// record runs fn against a served share and returns the client's stream.
func record(tb testing.TB, fn func(root p9.File)) []byte {
	dir := tb.TempDir()
	os.WriteFile(filepath.Join(dir, "hello"), []byte("hello"), 0o644)
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	s, err := Open(dir, false)
	if err != nil {
		tb.Fatal(err)
	}
	defer s.Close()
	cs, ss := net.Pipe()
	done := make(chan struct{})
	go func() { defer close(done); _ = p9.NewServer(s).Handle(ss, ss) }()
	tc := &tee{Conn: cs}
	c, err := p9.NewClient(tc, p9.WithMessageSize(8192))
	if err != nil {
		tb.Fatal(err)
	}
	root, err := c.Attach("")
	if err != nil {
		tb.Fatal(err)
	}
	fn(root)
	c.Close()
	<-done
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return bytes.Clone(tc.out.Bytes())
}

func honest(root p9.File) {
	_, f, _ := root.Walk([]string{"hello"})
	f.Open(p9.ReadWrite)
	f.ReadAt(make([]byte, 64), 0)
	f.WriteAt([]byte("x"), 5)
	f.GetAttr(p9.AttrMaskAll)
	f.SetAttr(p9.SetAttrMask{Permissions: true, Size: true}, p9.SetAttr{Permissions: 0o600, Size: 2})
	_, d, _ := root.Walk(nil)
	d.Open(p9.ReadOnly)
	d.Readdir(0, 4096)
	_, d2, _ := root.Walk(nil)
	d2.Create("new", p9.ReadWrite, 0o644, p9.NoUID, p9.NoGID)
	root.Mkdir("dir", 0o755, p9.NoUID, p9.NoGID)
	root.Symlink("/etc/passwd", "link", p9.NoUID, p9.NoGID)
	_, l, _ := root.Walk([]string{"link"})
	l.Readlink()
	root.Mknod("fifo", p9.ModeNamedPipe|0o644, 0, 0, p9.NoUID, p9.NoGID)
	_, h, _ := root.Walk([]string{"hello"})
	root.Link(h, "hard")
	_, sub, _ := root.Walk([]string{"sub"})
	root.RenameAt("hard", sub, "moved")
	sub.UnlinkAt("moved", 0)
	root.UnlinkAt("dir", unix.AT_REMOVEDIR)
	root.StatFS()
	f.FSync()
}

// FuzzBackend feeds p9's decoder (the server's reading end) any byte
// stream for a fresh share beside a file outside it, and checks that the
// backend never panics (p9 recovers handler panics; its log shows them),
// nothing outside the share changes, and nothing setuid, setgid or a
// device node appears in it.
func FuzzBackend(f *testing.F) {
	f.Add(record(f, honest))
	f.Add(record(f, func(p9.File) {}))
	f.Fuzz(func(t *testing.T, stream []byte) {
		base := t.TempDir()
		share, outside := filepath.Join(base, "share"), filepath.Join(base, "outside")
		os.Mkdir(share, 0o755)
		os.Mkdir(outside, 0o755)
		os.WriteFile(filepath.Join(share, "hello"), []byte("hello"), 0o644)
		os.Mkdir(filepath.Join(share, "sub"), 0o755)
		os.Symlink(outside, filepath.Join(share, "out"))
		os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o644)
		s, err := Open(share, false)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		log := &panicLog{}
		srv := p9.NewServer(s, p9.WithServerLogger(log))
		_ = srv.Handle(io.NopCloser(bytes.NewReader(transportChecks(stream))), nopWriter{})
		if p := log.get(); p != "" {
			t.Fatalf("backend panic: %s", p)
		}
		if n := s.files.Load(); n != 0 {
			t.Fatalf("%d files left open", n)
		}
		ents, _ := os.ReadDir(outside)
		b, _ := os.ReadFile(filepath.Join(outside, "secret"))
		if len(ents) != 1 || string(b) != "secret" {
			t.Fatalf("outside changed: %d entries, secret %q", len(ents), b)
		}
		if ents, _ := os.ReadDir(base); len(ents) != 2 {
			t.Fatalf("%d entries beside the share", len(ents))
		}
		filepath.Walk(share, func(p string, fi os.FileInfo, err error) error {
			if err == nil && (fi.Mode()&(os.ModeSetuid|os.ModeSetgid|os.ModeDevice) != 0) {
				t.Errorf("%s has mode %v", p, fi.Mode())
			}
			return nil
		})
	})
}

// transportChecks drops what the virtio transport refuses before p9's
// server sees it (devices/virtio/p9.go checkLocked), because the server
// hangs or races on it: every Tflush (its wait can be on itself) and a
// Tversion after the first message. A message the stream cuts short is
// kept: the server reads EOF.
func transportChecks(stream []byte) []byte {
	var out []byte
	for i := 0; len(stream) >= 7; i++ {
		n := int(binary.LittleEndian.Uint32(stream))
		if n < 7 || n > len(stream) {
			return append(out, stream...)
		}
		if typ := stream[4]; typ != 108 && (typ != 100 || i == 0) {
			out = append(out, stream[:n]...)
		}
		stream = stream[n:]
	}
	return append(out, stream...)
}

type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }
func (nopWriter) Close() error                { return nil }

// panicLog keeps the server's "panic in handler" lines whose stack is in
// the backend's Files (p9's own recovered panics, such as a Tread before
// Tversion, are the codec's and are answered with EFAULT).
type panicLog struct {
	mu sync.Mutex
	s  string
}

func (l *panicLog) Printf(format string, v ...any) {
	if !strings.HasPrefix(format, "panic in handler") {
		return
	}
	m := fmt.Sprintf(format, v...)
	if strings.Contains(m, "p9fs.(*file)") || strings.Contains(m, "p9fs.(*Share)") {
		l.mu.Lock()
		l.s = m
		l.mu.Unlock()
	}
}

func (l *panicLog) get() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.s
}
