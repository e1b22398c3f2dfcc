package main

import (
	"fmt"
	"strings"

	"github.com/microvm-dev/microvm"
)

// parseShare parses --share HOSTDIR[:GUESTPATH][,ro]. The directory and
// the path are checked by the API (Config.Shares), which names --share.
func parseShare(s string) (microvm.Share, error) {
	spec, opts, _ := strings.Cut(s, ",")
	dir, guest, _ := strings.Cut(spec, ":")
	sh := microvm.Share{HostDir: dir, GuestPath: guest}
	if dir == "" {
		return sh, &microvm.InputError{What: "--share", Msg: fmt.Sprintf("%q: no host directory", s)}
	}
	ro, err := flagOption("--share", spec, opts, "ro")
	sh.ReadOnly = ro
	return sh, err
}

// parseRootfs parses --rootfs DIR[,rw].
func parseRootfs(s string) (*microvm.Rootfs, error) {
	dir, opts, _ := strings.Cut(s, ",")
	r := &microvm.Rootfs{Dir: dir}
	if dir == "" {
		return nil, &microvm.InputError{What: "--rootfs", Msg: fmt.Sprintf("%q: no directory", s)}
	}
	rw, err := flagOption("--rootfs", dir, opts, "rw")
	r.RW = rw
	return r, err
}

// flagOption reads the comma-separated options of flag's value for what:
// only the one named opt is known; it reports whether it was given.
func flagOption(flag, what, opts, opt string) (bool, error) {
	on := false
	for _, o := range strings.Split(opts, ",") {
		switch o {
		case "":
		case opt:
			on = true
		default:
			return false, &microvm.InputError{What: flag, Msg: fmt.Sprintf("%s: unknown option %q (want %s)", what, o, opt)}
		}
	}
	return on, nil
}

// shareConfig adds the --share and --rootfs flags to cfg.
func (f *vmFlags) shareConfig(cfg *microvm.Config) error {
	for _, s := range f.shares {
		sh, err := parseShare(s)
		if err != nil {
			return err
		}
		cfg.Shares = append(cfg.Shares, sh)
	}
	if f.rootfs != "" {
		r, err := parseRootfs(f.rootfs)
		if err != nil {
			return err
		}
		cfg.Rootfs = r
	}
	return nil
}
