package main

import (
	"context"
	"fmt"
	"os"

	"github.com/microvm-dev/microvm"
	"github.com/spf13/pflag"
)

// run --snapshot DIR and --restore DIR (issue 15). The command travels over
// the agent channel, so that one snapshot, taken with the agent waiting
// for a command, serves every command: both flags imply --console virtio.
type snapFlags struct{ snapshot, restore string }

func (s *snapFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&s.snapshot, "snapshot", "", "start from the snapshot in DIR; if there is none for this kernel, initrd and configuration, boot, save one there when the agent is ready, then run the command (implies --console virtio)")
	fs.StringVar(&s.restore, "restore", "", "start from the snapshot in DIR, refusing (exit 2) one that is missing, damaged or of another kernel, initrd or configuration (implies --console virtio)")
}

// check refuses contradictory flags and turns the console to virtio.
func (s *snapFlags) check(fs *pflag.FlagSet, f *vmFlags) error {
	flag := "--snapshot"
	switch {
	case s.snapshot != "" && s.restore != "":
		return &microvm.InputError{What: "--restore", Msg: "give --snapshot or --restore, not both"}
	case s.restore != "":
		flag = "--restore"
	case s.snapshot == "":
		if fs.Changed("snapshot") || fs.Changed("restore") {
			return &microvm.InputError{What: "--snapshot", Msg: "needs a directory"}
		}
		return nil
	}
	if len(f.shares) > 0 || f.rootfs != "" {
		// See Config.SaveSnapshot: virtio-9p shares are not snapshotted.
		return &microvm.InputError{What: flag, Msg: "not with --share or --rootfs: virtio-9p shares are not snapshotted"}
	}
	if fs.Changed("console") && f.consoleKind != "virtio" {
		return &microvm.InputError{What: flag, Msg: "needs --console virtio: the command travels over the agent channel, so that one snapshot serves every command"}
	}
	f.consoleKind = "virtio"
	return nil
}

// start is how execute starts the guest.
func (s *snapFlags) start() startFunc {
	switch {
	case s.restore != "":
		dir := s.restore
		return func(ctx context.Context, cfg microvm.Config) (*microvm.VM, error) {
			cfg.Restore = dir
			return microvm.Start(ctx, cfg)
		}
	case s.snapshot != "":
		return s.restoreOrBoot
	}
	return microvm.Start
}

// restoreOrBoot restores the snapshot if it is for this machine, and
// otherwise boots and saves one in its place.
func (s *snapFlags) restoreOrBoot(ctx context.Context, cfg microvm.Config) (*microvm.VM, error) {
	rc := cfg
	rc.Restore = s.snapshot
	vm, err := microvm.Start(ctx, rc)
	if err == nil || !microvm.IsStale(err) {
		return vm, err
	}
	if _, serr := os.Stat(s.snapshot); serr == nil {
		fmt.Fprintf(os.Stderr, "microvm: %v; booting to make it again\n", err)
	}
	cfg.SaveSnapshot = s.snapshot
	return microvm.Start(ctx, cfg)
}

// describeSnapshot is the --timings line for the snapshot path taken.
func describeSnapshot(s *microvm.SnapshotInfo) string {
	switch {
	case s.Restored:
		return "restored from " + s.Dir
	case s.Saved:
		return fmt.Sprintf("booted, saved to %s (guest paused %.1f ms; memory file %.1f MiB allocated, state %d KiB)",
			s.Dir, ms(s.Pause), float64(s.MemoryBytes)/(1<<20), s.StateBytes>>10)
	}
	return fmt.Sprintf("booted; saving to %s failed: %v", s.Dir, s.Err)
}
