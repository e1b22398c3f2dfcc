package nested

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPayloadTimeout(t *testing.T) {
	for total, want := range map[time.Duration]time.Duration{
		time.Minute:      48 * time.Second,
		10 * time.Minute: 9 * time.Minute,
	} {
		if got := payloadTimeout(total); got != want {
			t.Errorf("payloadTimeout(%v) = %v, want %v", total, got, want)
		}
	}
}

// TestRunNested boots a real L1. It runs only when MICROVM_NESTED_KERNEL
// names an L1 bzImage, since a boot under TCG takes seconds.
func TestRunNested(t *testing.T) {
	kernel := os.Getenv("MICROVM_NESTED_KERNEL")
	if kernel == "" {
		t.Skip("MICROVM_NESTED_KERNEL not set")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("no qemu-system-x86_64")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	os.WriteFile(src, []byte(`package main
import ("fmt"; "os")
func main() { _, err := os.Stat("/dev/kvm"); fmt.Println("payload kvm err:", err, os.Args[1:], os.Getenv("FOO")); os.Exit(7) }
`), 0o644)
	bin := filepath.Join(dir, "payload")
	cmd := exec.Command("go", "build", "-o", bin, src)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GO111MODULE=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building payload: %v: %s", err, out)
	}
	var console bytes.Buffer
	res, err := Run(context.Background(), Config{
		Kernel:    kernel,
		Files:     map[string]string{"/bin/payload": bin},
		Init:      "/bin/payload",
		Args:      []string{"a", "b"},
		Env:       []string{"FOO=bar"},
		MemoryMiB: 512,
		Timeout:   3 * time.Minute,
		Console:   &console,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("L1 round trip %v", res.Duration)
	if res.ExitCode != 7 {
		t.Errorf("exit code %d, want 7", res.ExitCode)
	}
	if !strings.Contains(string(res.Output), "payload kvm err: <nil> [a b] bar") {
		t.Errorf("payload output missing:\n%s", res.Output)
	}
}
