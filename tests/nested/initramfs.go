package nested

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/microvm-dev/microvm/internal/testimg"
	"github.com/microvm-dev/microvm/tests/nested/l1proto"
)

// modulesDir holds Config.Modules inside L1.
const modulesDir = "/l1modules"

// writeInitramfs writes L1's initramfs to dst: l1init as /init, its
// l1proto.Config, a /dev/console node and cfg.Files.
func writeInitramfs(dst string, cfg *Config, l1init string) error {
	lc := l1proto.Config{
		Init:       cfg.Init,
		Args:       cfg.Args,
		Env:        cfg.Env,
		Dir:        cfg.Dir,
		TimeoutMS:  payloadTimeout(cfg.Timeout).Milliseconds(),
		RequireKVM: !cfg.AllowNoKVM,
	}
	if cfg.Heartbeat > 0 {
		lc.HeartbeatMS = cfg.Heartbeat.Milliseconds()
	}
	// Numbered, so that two modules of one name stay apart and the order
	// is visible in L1.
	for i, m := range cfg.Modules {
		lc.Modules = append(lc.Modules, fmt.Sprintf("%s/%02d-%s", modulesDir, i+1, filepath.Base(m)))
	}
	js, err := json.MarshalIndent(lc, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	c := testimg.NewCPIO(bw)
	for _, d := range []string{"dev", "proc", "sys", "tmp", "root", "etc"} {
		c.Dir(d, 0o755)
	}
	// The kernel opens /dev/console for init's stdio before init runs,
	// which is before l1init can mount devtmpfs.
	c.CharDev("dev/console", 0o600, 5, 1)
	c.HostFile("init", l1init)
	c.Bytes(l1proto.ConfigPath, 0o644, append(js, '\n'))
	dests := make([]string, 0, len(cfg.Files))
	for d := range cfg.Files {
		dests = append(dests, d)
	}
	sort.Strings(dests)
	for _, d := range dests {
		if n := testimg.CPIOName(d); n == "init" || n == testimg.CPIOName(l1proto.ConfigPath) ||
			strings.HasPrefix(n, testimg.CPIOName(modulesDir)+"/") {
			f.Close()
			return fmt.Errorf("%s is reserved", d)
		}
		c.HostFile(d, cfg.Files[d])
	}
	if len(cfg.Modules) > 0 {
		c.Dir(testimg.CPIOName(modulesDir), 0o755)
		for i, d := range lc.Modules {
			c.HostFile(testimg.CPIOName(d), cfg.Modules[i])
		}
	}
	dests = dests[:0]
	for d := range cfg.Trees {
		dests = append(dests, d)
	}
	sort.Strings(dests)
	for _, d := range dests {
		c.Tree(d, cfg.Trees[d])
	}
	err = c.Close()
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
