package nested

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/microvm-dev/microvm/internal/testimg"
)

func TestWriteInitramfs(t *testing.T) {
	dir := t.TempDir()
	l1init := filepath.Join(dir, "l1init")
	payload := filepath.Join(dir, "payload")
	kvm := filepath.Join(dir, "kvm.ko")
	os.WriteFile(kvm, []byte("kvm module"), 0o644)
	os.WriteFile(l1init, []byte("init"), 0o755)
	os.WriteFile(payload, []byte("payload"), 0o755)
	root := filepath.Join(dir, "root")
	os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755)
	os.Symlink("usr/bin", filepath.Join(root, "bin"))
	cfg := Config{
		Files:   map[string]string{"/bin/payload": payload},
		Trees:   map[string]string{"/r": root},
		Modules: []string{kvm},
		Init:    "/bin/payload",
		Args:    []string{"-v"},
		Timeout: time.Minute,
	}
	cfg.defaults()
	dst := filepath.Join(dir, "initrd")
	if err := writeInitramfs(dst, &cfg, l1init); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(dst)
	ents, err := testimg.ReadCPIO(b)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]testimg.CPIOEntry{}
	for _, e := range ents {
		got[e.Name] = e
	}
	if e := got["init"]; string(e.Data) != "init" || e.Mode != testimg.ModeReg|0o755 {
		t.Errorf("init: %+v", e)
	}
	if e := got["bin/payload"]; string(e.Data) != "payload" {
		t.Errorf("bin/payload: %+v", e)
	}
	if e := got["r/bin"]; string(e.Data) != "usr/bin" || e.Mode != testimg.ModeLnk|0o777 {
		t.Errorf("the tree's r/bin is not its symlink: %+v", e)
	}
	if e := got["l1modules/01-kvm.ko"]; string(e.Data) != "kvm module" {
		t.Errorf("l1modules/01-kvm.ko: %+v", e)
	}
	js := string(got["l1config.json"].Data)
	for _, s := range []string{`"init": "/bin/payload"`, `"-v"`, `"timeout_ms": 48000`, `"require_kvm": true`,
		`"modules": [`, `"/l1modules/01-kvm.ko"`} {
		if !strings.Contains(js, s) {
			t.Errorf("l1config.json lacks %s:\n%s", s, js)
		}
	}
	for _, reserved := range []string{"/init", "/l1modules/01-kvm.ko"} {
		cfg.Files[reserved] = payload
		if err := writeInitramfs(dst, &cfg, l1init); err == nil {
			t.Errorf("overriding %s was accepted", reserved)
		}
		delete(cfg.Files, reserved)
	}
}
