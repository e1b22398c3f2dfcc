package main

import (
	"os"
	"path/filepath"

	"github.com/microvm-dev/microvm"
)

// cacheDir is where `make kernel` and `make initrd` put the default guest:
// $MICROVM_CACHE, else $XDG_CACHE_HOME/microvm or ~/.cache/microvm.
func cacheDir() string {
	if d := os.Getenv("MICROVM_CACHE"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "microvm")
	}
	return "/tmp/microvm"
}

// defaults fills in --kernel and --initrd from the cache when they were not
// given, with an error that says how to build what is missing; and turns
// ACPI off for the project's own kernel, which has none (unless --acpi was
// given): it finds its devices on the command line.
func (f *vmFlags) defaults() error {
	if err := f.defaultArtifacts(); err != nil {
		return err
	}
	if f.fs != nil && !f.fs.Changed("acpi") && microvm.NoACPIFor(f.kernel) {
		f.acpi = "off"
	}
	return nil
}

func (f *vmFlags) defaultArtifacts() error {
	for _, a := range []struct {
		flag, file, target string
		val                *string
	}{
		{"--kernel", "bzImage", "make kernel", &f.kernel},
		{"--initrd", "initrd.cpio", "make initrd", &f.initrd},
	} {
		if *a.val != "" {
			continue
		}
		p := filepath.Join(cacheDir(), a.file)
		if _, err := os.Stat(p); err != nil {
			return &microvm.InputError{What: a.flag, Msg: "not given and the default " + p + " does not exist: build it with `" + a.target + "` in the microvm source tree"}
		}
		*a.val = p
	}
	return nil
}
