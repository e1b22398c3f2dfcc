package microvm

import (
	"errors"

	"github.com/microvm-dev/microvm/internal/snapshot"
	"github.com/microvm-dev/microvm/internal/vmm"
)

// SnapshotInfo describes a snapshot saved or restored: its directory,
// whether it was restored or saved (Err says why not, for a SaveSnapshot
// that failed), how long the guest was paused for it and the size of its
// files (MemoryBytes is the memory file's allocated size: only the pages
// the guest touched are written, the rest are holes).
type SnapshotInfo = vmm.SnapshotInfo

// SnapshotOptions are VM.Snapshot's options.
type SnapshotOptions struct {
	// Stop ends the guest once it is saved (Result.Reason ExitSnapshot)
	// instead of resuming it.
	Stop bool
}

// Snapshot pauses the running guest, saves it into dir and resumes it (or
// stops it, with opt.Stop). dir must not exist, be empty, or hold a
// snapshot, which is replaced in one step: a process killed while saving
// leaves nothing a Restore would take. The snapshot restores the guest at
// this point, with Config.Restore and no Command (its agent, if any, is
// not waiting for one; see Config.SaveSnapshot for that).
func (vm *VM) Snapshot(dir string, opt SnapshotOptions) (SnapshotInfo, error) {
	if vm.sandbox != nil {
		// The sandbox admits no open by name and none of the state
		// ioctls: a snapshot here would die of SIGSYS. SaveSnapshot's is
		// prepared in Build and allowed for.
		return SnapshotInfo{Dir: dir}, errors.New("snapshot: this process is sandboxed (set Config.NoSandbox to snapshot a running guest, or Config.SaveSnapshot for one at agent ready)")
	}
	return vm.m.Snapshot(dir, snapshot.PointRunning, opt.Stop)
}

// IsStale reports whether err, from Start with Config.Restore, is for a
// snapshot that is missing, or intact but made of another machine (other
// kernel, initrd, memory, vCPUs, command line, devices, a disk changed
// since, or an older format): one made again in its place would do.
// Other errors are a damaged snapshot, or one this host cannot run.
func IsStale(err error) bool { return vmm.IsStaleSnapshot(err) }
