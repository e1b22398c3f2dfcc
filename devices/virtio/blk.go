package virtio

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// virtio-blk (spec 5.2).
const (
	blkFSegMax = 1 << 2
	blkFRO     = 1 << 5
	blkFFlush  = 1 << 9

	blkTIn    = 0
	blkTOut   = 1
	blkTFlush = 4
	blkTGetID = 8

	blkSOK     = 0
	blkSIOErr  = 1
	blkSUnsupp = 2

	SectorSize  = 512
	blkIDLen    = 20
	blkHdrLen   = 16
	blkQueueMax = MaxQueueSize
	// blkSegMax is what the device announces; chains may carry up to the
	// queue size anyway, and the walker bounds them.
	blkSegMax = blkQueueMax - 2
)

// BlockFile is the host side of a disk: a raw image file.
type BlockFile interface {
	io.ReaderAt
	io.WriterAt
	Sync() error // fdatasync
}

// Block is a virtio-blk device over a raw image.
type Block struct {
	f        BlockFile
	sectors  uint64
	readOnly bool
	id       string
}

// NewBlock returns a block device of size bytes (rounded down to whole
// sectors). id is reported to VIRTIO_BLK_T_GET_ID (at most 20 bytes kept).
func NewBlock(f BlockFile, size uint64, readOnly bool, id string) *Block {
	return &Block{f: f, sectors: size / SectorSize, readOnly: readOnly, id: id}
}

func (b *Block) Type() uint32 { return 2 }

func (b *Block) Features() uint64 {
	f := uint64(blkFSegMax | blkFFlush)
	if b.readOnly {
		f |= blkFRO
	}
	return f
}

func (b *Block) QueueSizes() []uint16 { return []uint16{blkQueueMax} }

// ReadConfig serves struct virtio_blk_config: capacity (le64) at 0, size_max
// at 8, seg_max at 12; the rest reads as zero.
func (b *Block) ReadConfig(off uint64, d []byte) {
	var cfg [64]byte
	binary.LittleEndian.PutUint64(cfg[0:], b.sectors)
	binary.LittleEndian.PutUint32(cfg[12:], blkSegMax)
	readConfig(cfg[:], off, d)
}

func (b *Block) WriteConfig(uint64, []byte) {}

// readConfig copies cfg[off:] into d, zero-filling past the end.
func readConfig(cfg []byte, off uint64, d []byte) {
	clear(d)
	if off < uint64(len(cfg)) {
		copy(d, cfg[off:])
	}
}

// blkRequest is a parsed request: header, data buffers and the status byte.
type blkRequest struct {
	typ    uint32
	sector uint64
	data   [][]byte // OUT: readable data; IN/GET_ID: writable data
	status []byte   // the last writable byte
}

// parseBlkRequest splits a chain into a request (spec 5.2.6): a 16-byte
// readable header, data, and a final writable status byte. A chain with no
// writable byte cannot be answered and is a driver error; other defects get
// a status.
func parseBlkRequest(c *Chain) (blkRequest, error) {
	var r blkRequest
	wl := c.WritableLen()
	if wl == 0 {
		return r, qerr("block request %d has no writable status byte", c.Head)
	}
	// The status byte is the last byte of the writable part.
	w := sub(c.W, 0, wl-1)
	r.status = sub(c.W, wl-1, 1)[0]
	var hdr [blkHdrLen]byte
	if gather(hdr[:], c.R, 0) < blkHdrLen {
		r.typ = ^uint32(0) // answered with UNSUPP
		return r, nil
	}
	r.typ = binary.LittleEndian.Uint32(hdr[0:])
	r.sector = binary.LittleEndian.Uint64(hdr[8:])
	switch r.typ {
	case blkTOut:
		r.data = sub(c.R, blkHdrLen, c.ReadableLen()-blkHdrLen)
	default:
		r.data = w
	}
	return r, nil
}

// Run serves requests one at a time, in order.
func (b *Block) Run(ctx context.Context, qs *Queues) error {
	return serveQueue(ctx, qs, 0, func(c *Chain) (uint32, error) {
		r, err := parseBlkRequest(c)
		if err != nil {
			return 0, err
		}
		st, n := b.do(&r)
		r.status[0] = st
		return uint32(n) + 1, nil
	})
}

// do performs one request and returns its status and the data bytes
// written to the guest. Host I/O errors become VIRTIO_BLK_S_IOERR.
func (b *Block) do(r *blkRequest) (byte, int) {
	switch r.typ {
	case blkTIn, blkTOut:
		n := totalLen(r.data)
		if n%SectorSize != 0 || r.sector > b.sectors || uint64(n/SectorSize) > b.sectors-r.sector {
			return blkSIOErr, 0
		}
		if r.typ == blkTOut && b.readOnly {
			return blkSIOErr, 0
		}
		off := int64(r.sector * SectorSize)
		for _, d := range r.data {
			var err error
			if r.typ == blkTIn {
				err = readFull(b.f, d, off)
			} else {
				_, err = b.f.WriteAt(d, off)
			}
			if err != nil {
				return blkSIOErr, 0
			}
			off += int64(len(d))
		}
		if r.typ == blkTIn {
			return blkSOK, n
		}
		return blkSOK, 0
	case blkTFlush:
		if b.readOnly {
			return blkSOK, 0
		}
		if err := b.f.Sync(); err != nil {
			return blkSIOErr, 0
		}
		return blkSOK, 0
	case blkTGetID:
		var id [blkIDLen]byte
		copy(id[:], b.id)
		return blkSOK, scatter(r.data, 0, id[:])
	}
	return blkSUnsupp, 0
}

// readFull reads len(d) bytes at off; bytes past the end of the file (it
// may have shrunk under us) read as zero.
func readFull(f io.ReaderAt, d []byte, off int64) error {
	n, err := f.ReadAt(d, off)
	if errors.Is(err, io.EOF) {
		clear(d[n:])
		return nil
	}
	return err
}

// DiskFile is a raw image opened for a Block device.
type DiskFile struct {
	*os.File
	Size uint64
}

// Sync flushes written data to stable storage (VIRTIO_BLK_T_FLUSH).
func (d DiskFile) Sync() error { return unix.Fdatasync(int(d.Fd())) }

// OpenDisk opens a raw image for a guest disk and locks it (shared for
// read-only, exclusive otherwise), so that two VMs cannot write one image.
// Errors are one line naming the path.
func OpenDisk(path string, readOnly bool) (DiskFile, error) {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return DiskFile{}, fmt.Errorf("%s: no such file", path)
	case err != nil:
		return DiskFile{}, fmt.Errorf("%s: %v", path, errors.Unwrap(err))
	case st.IsDir():
		return DiskFile{}, fmt.Errorf("%s is a directory, not a disk image", path)
	case !st.Mode().IsRegular() && st.Mode()&os.ModeDevice == 0:
		return DiskFile{}, fmt.Errorf("%s is not a regular file or block device", path)
	}
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return DiskFile{}, fmt.Errorf("%s: cannot open: %v", path, errors.Unwrap(err))
	}
	lock := unix.LOCK_EX
	if readOnly {
		lock = unix.LOCK_SH
	}
	if err := unix.Flock(int(f.Fd()), lock|unix.LOCK_NB); err != nil {
		f.Close()
		return DiskFile{}, fmt.Errorf("%s is in use by another VM (or given twice)", path)
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return DiskFile{}, fmt.Errorf("%s: cannot get size: %v", path, err)
	}
	if size < SectorSize {
		f.Close()
		return DiskFile{}, fmt.Errorf("%s is %d bytes; a disk needs at least %d", path, size, SectorSize)
	}
	return DiskFile{File: f, Size: uint64(size)}, nil
}
