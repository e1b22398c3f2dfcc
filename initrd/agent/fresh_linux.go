package main

import (
	"fmt"
	"os"
	"unsafe"

	"github.com/microvm-dev/microvm/agentproto"
	"golang.org/x/sys/unix"
)

// A guest restored from a snapshot is a clone: every guest restored from
// the same one starts with the same CRNG state and the clock of the moment
// it was taken. The host's "cmd" carries a seed from its getrandom and its
// wall clock (agentproto, "cmd"), which the agent applies before it runs
// the command (issue 15).

// ioctls of random(4): _IOW('R', 0x03, int[2]) and _IO('R', 0x07).
const (
	rndAddEntropy  = 0x40085203
	rndReseedCRNG  = 0x5207
	bitsPerByte    = 8
	randPoolHeader = 8 // struct rand_pool_info: int entropy_count, int buf_size
)

// freshen applies m's seed and clock; a failure is reported and the
// command runs anyway (the guest is then only as unique as its own
// entropy makes it).
func freshen(m agentproto.Msg) {
	if len(m.Seed) > 0 {
		if err := addEntropy(m.Seed); err != nil {
			fmt.Fprintf(os.Stderr, "guest: agent: warning: host entropy not added: %v\n", err)
		}
	}
	if m.TimeNS > 0 {
		ts := unix.NsecToTimespec(m.TimeNS)
		if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
			fmt.Fprintf(os.Stderr, "guest: agent: warning: clock not set: %v\n", err)
		}
	}
}

// addEntropy mixes seed into the input pool, credited in full (it comes
// from the host's CRNG: RNDADDENTROPY), then makes the CRNG reseed from
// the pool at once (RNDRESEEDCRNG) rather than at its next scheduled
// reseed, which a clone may not reach before it uses its random numbers.
func addEntropy(seed []byte) error {
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	// struct rand_pool_info, then the bytes (its buf is __u32[], so the
	// size is a multiple of 4).
	n := (len(seed) + 3) &^ 3
	b := make([]byte, randPoolHeader+n)
	*(*int32)(unsafe.Pointer(&b[0])) = int32(len(seed) * bitsPerByte)
	*(*int32)(unsafe.Pointer(&b[4])) = int32(len(seed))
	copy(b[randPoolHeader:], seed)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), rndAddEntropy, uintptr(unsafe.Pointer(&b[0]))); e != 0 {
		return fmt.Errorf("RNDADDENTROPY: %w", e)
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), rndReseedCRNG, 0); e != 0 {
		return fmt.Errorf("RNDRESEEDCRNG: %w", e)
	}
	return nil
}
