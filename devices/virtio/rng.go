package virtio

import (
	"context"
	"fmt"

	"golang.org/x/sys/unix"
)

// RNG is virtio-rng, the entropy device (spec 5.4), fed from the host's
// getrandom(2).
type RNG struct{}

func (RNG) Type() uint32                  { return 4 }
func (RNG) Features() uint64              { return 0 }
func (RNG) QueueSizes() []uint16          { return []uint16{MaxQueueSize} }
func (RNG) ReadConfig(_ uint64, d []byte) { clear(d) }
func (RNG) WriteConfig(uint64, []byte)    {}

// rngMaxChunk bounds the bytes served per request, so a guest offering a
// huge buffer cannot keep the device busy.
const rngMaxChunk = 64 * 1024

func fill(bufs [][]byte) (int, error) {
	n := 0
	for _, b := range bufs {
		for len(b) > 0 {
			k, err := unix.Getrandom(b, 0)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return n, fmt.Errorf("getrandom: %w", err)
			}
			b, n = b[k:], n+k
		}
	}
	return n, nil
}

// Run fills every writable buffer the driver offers with random bytes.
func (RNG) Run(ctx context.Context, qs *Queues) error {
	return serveQueue(ctx, qs, 0, func(c *Chain) (uint32, error) {
		n, err := fill(sub(c.W, 0, rngMaxChunk))
		return uint32(n), err
	})
}
