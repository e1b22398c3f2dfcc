package snapshot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// The state file is little-endian fixed-width integers and length-prefixed
// byte strings, written by Encoder and read back by Decoder. A snapshot is
// untrusted input on restore: every length the Decoder reads is checked
// against what is left and against a limit the caller names before
// anything is allocated, and the first error sticks, so a decoder can read a
// whole structure and look at Err once.

// ErrTruncated is returned for a state that ends before its contents do.
var ErrTruncated = errors.New("truncated")

// Encoder appends values to a byte slice.
type Encoder struct{ b []byte }

// Bytes returns what was encoded.
func (e *Encoder) Bytes() []byte { return e.b }

func (e *Encoder) U8(v uint8)   { e.b = append(e.b, v) }
func (e *Encoder) U16(v uint16) { e.b = binary.LittleEndian.AppendUint16(e.b, v) }
func (e *Encoder) U32(v uint32) { e.b = binary.LittleEndian.AppendUint32(e.b, v) }
func (e *Encoder) U64(v uint64) { e.b = binary.LittleEndian.AppendUint64(e.b, v) }
func (e *Encoder) I64(v int64)  { e.U64(uint64(v)) }

func (e *Encoder) Bool(v bool) {
	if v {
		e.U8(1)
	} else {
		e.U8(0)
	}
}

// Blob writes a length-prefixed byte string.
func (e *Encoder) Blob(b []byte) {
	e.U32(uint32(len(b)))
	e.b = append(e.b, b...)
}

// String writes a length-prefixed string.
func (e *Encoder) String(s string) { e.Blob([]byte(s)) }

// Decoder reads what an Encoder wrote. Methods return zero values once an
// error has occurred; Err reports the first one.
type Decoder struct {
	b   []byte
	err error
}

// NewDecoder reads b.
func NewDecoder(b []byte) *Decoder { return &Decoder{b: b} }

// Err is the first error met, if any.
func (d *Decoder) Err() error { return d.err }

// Fail records err (the first one wins) for a caller that found the value
// it decoded out of range.
func (d *Decoder) Fail(format string, a ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, a...)
	}
}

// Finish is Err, or an error if bytes are left over: a state must be
// consumed exactly, or its writer and reader disagree.
func (d *Decoder) Finish() error {
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d unexpected bytes at the end", len(d.b))
	}
	return d.err
}

func (d *Decoder) take(n uint64) []byte {
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = ErrTruncated
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *Decoder) U8() uint8 {
	if b := d.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (d *Decoder) U16() uint16 {
	if b := d.take(2); b != nil {
		return binary.LittleEndian.Uint16(b)
	}
	return 0
}

func (d *Decoder) U32() uint32 {
	if b := d.take(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (d *Decoder) U64() uint64 {
	if b := d.take(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

func (d *Decoder) I64() int64 { return int64(d.U64()) }

// Bool reads a byte that must be 0 or 1.
func (d *Decoder) Bool() bool {
	switch v := d.U8(); v {
	case 0:
		return false
	case 1:
		return true
	default:
		d.Fail("boolean byte %d", v)
		return false
	}
}

// Blob reads a byte string of at most max bytes. The result aliases the
// decoder's input.
func (d *Decoder) Blob(max int) []byte {
	n := d.U32()
	if d.err == nil && uint64(n) > uint64(max) {
		d.Fail("%d-byte field over its limit of %d", n, max)
		return nil
	}
	return d.take(uint64(n))
}

// Exact reads a byte string that must be exactly n bytes long (a KVM
// structure of a fixed size).
func (d *Decoder) Exact(n int, what string) []byte {
	b := d.Blob(n)
	if d.err == nil && len(b) != n {
		d.Fail("%s: %d bytes, want %d", what, len(b), n)
		return nil
	}
	return b
}

// String reads a string of at most max bytes.
func (d *Decoder) String(max int) string { return string(d.Blob(max)) }

// Count reads a number of elements that follow, each at least minSize bytes
// long, and refuses a count over max or one the rest of the input could
// not hold: no allocation is sized from a number the file alone claims.
func (d *Decoder) Count(max, minSize int) int {
	n := d.U32()
	if d.err != nil {
		return 0
	}
	if uint64(n) > uint64(max) {
		d.Fail("count %d over its limit of %d", n, max)
		return 0
	}
	if minSize > 0 && uint64(n)*uint64(minSize) > uint64(len(d.b)) {
		d.err = ErrTruncated
		return 0
	}
	if n > math.MaxInt32 {
		d.Fail("count %d", n)
		return 0
	}
	return int(n)
}
