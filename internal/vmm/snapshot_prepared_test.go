package vmm

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microvm-dev/microvm/internal/snapshot"
)

// syncBuf is a console capture the test reads while the guest writes.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestSnapshotPreparedInBuild: with SnapshotAtReady, Build opens every
// file the snapshot writes, so that the snapshot needs no path once the
// machine runs (the sandbox forbids opening one): here the snapshot's
// parent directory is moved away after Build, and the snapshot still lands
// in it, whole, and restores. Machine.Snapshot takes the prepared writer
// as the agent-ready snapshot does. It boots tests/guests' counter
// micro-guest on this host's /dev/kvm.
func TestSnapshotPreparedInBuild(t *testing.T) {
	guests := os.Getenv("MICROVM_GUESTS")
	kernel := filepath.Join(guests, "counter.elf")
	if _, err := os.Stat(kernel); guests == "" || err != nil {
		t.Skip("MICROVM_GUESTS (tests/guests' micro-guests, built by tests/run.sh) is not set")
	}
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Skip("no /dev/kvm")
	}
	root := t.TempDir()
	dir := filepath.Join(root, "a", "snap")
	os.Mkdir(filepath.Join(root, "a"), 0o700)
	channel := &Channel{Name: "test.port", Open: func(ChannelEnd) io.Writer { return io.Discard }}
	var out syncBuf
	cfg := Config{Kernel: kernel, CPUs: 1, Memory: 64 << 20, Stdout: &out, Started: time.Now(),
		VirtioConsole: true, Channel: channel, SnapshotAtReady: dir, Logf: t.Logf}
	m, err := Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	// Build made the writer: its temporary directory is there already.
	if ents, _ := os.ReadDir(filepath.Join(root, "a")); len(ents) != 1 || !strings.HasPrefix(ents[0].Name(), ".snap.tmp-") {
		t.Fatalf("after Build: %v, want one temporary directory", ents)
	}
	if err := os.Rename(filepath.Join(root, "a"), filepath.Join(root, "b")); err != nil {
		t.Fatal(err)
	}
	done := make(chan Result, 1)
	go func() { done <- m.Run(context.Background()) }()
	for deadline := time.Now().Add(time.Minute); !strings.Contains(out.String(), "count 3\n"); {
		if time.Now().After(deadline) {
			t.Fatalf("no count 3; output %q", out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	info, err := m.Snapshot(dir, snapshot.PointRunning, true)
	if err != nil {
		t.Fatalf("snapshot with its parent moved: %v", err)
	}
	if res := <-done; res.Reason != ExitSnapshot {
		t.Fatalf("ended %+v", res)
	}
	moved := filepath.Join(root, "b", "snap")
	f, mem, err := snapshot.Open(moved)
	if err != nil {
		t.Fatalf("the snapshot is not in the moved directory: %v", err)
	}
	mem.Close()
	if f.Meta.Kernel.SHA256 == ([32]byte{}) || info.MemoryBytes == 0 {
		t.Errorf("kernel hash %x, memory %d bytes", f.Meta.Kernel.SHA256, info.MemoryBytes)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "b")); len(ents) != 1 {
		t.Errorf("left in the parent: %v", ents)
	}

	var out2 syncBuf
	cfg.Restore, cfg.SnapshotAtReady, cfg.Stdout, cfg.Started = moved, "", &out2, time.Now()
	m2, err := Build(cfg)
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	defer m2.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done2 := make(chan Result, 1)
	go func() { done2 <- m2.Run(ctx) }()
	for deadline := time.Now().Add(time.Minute); !strings.Contains(out2.String(), "count 6\n"); {
		if time.Now().After(deadline) {
			t.Fatalf("restored guest: no count 6; output %q", out2.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done2
	if strings.Contains(out2.String(), "count 1\n") {
		t.Errorf("the restored guest counted from the start: %q", out2.String())
	}
}

// TestSnapshotBadTargetInBuild: a SnapshotAtReady directory that is not
// ours to replace is refused by Build, as input, before any guest runs.
func TestSnapshotBadTargetInBuild(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "notes"), []byte("mine"), 0o600)
	guests := os.Getenv("MICROVM_GUESTS")
	kernel := filepath.Join(guests, "counter.elf")
	if _, err := os.Stat(kernel); guests == "" || err != nil {
		t.Skip("MICROVM_GUESTS is not set")
	}
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Skip("no /dev/kvm")
	}
	channel := &Channel{Name: "test.port", Open: func(ChannelEnd) io.Writer { return io.Discard }}
	_, err := Build(Config{Kernel: kernel, CPUs: 1, Memory: 64 << 20, Started: time.Now(),
		VirtioConsole: true, Channel: channel, SnapshotAtReady: dir})
	if !IsInputError(err) || !strings.Contains(err.Error(), "not a microvm snapshot") {
		t.Errorf("Build with a foreign SnapshotAtReady directory: %v, want an input error", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "notes")); string(b) != "mine" {
		t.Error("the directory was touched")
	}
}
