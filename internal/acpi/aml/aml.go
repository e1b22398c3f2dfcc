// Package aml encodes the small part of the ACPI Machine Language a VMM's
// DSDT needs: names, scopes, devices, packages, integers, strings,
// resource templates, and methods whose statements are Notify. Every
// function returns the encoded bytes of one term, to be nested into the
// next; nothing is evaluated. Section numbers are
// those of the ACPI Specification 6.5: chapter 20 (AML grammar) and 6.4
// (resource data types).
//
// Names and values come from the VMM's own code, never from a guest; a name
// that is not valid AML is a bug in the caller and panics.
package aml

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// AML opcodes (20.2.5, 20.3 "AML Byte Stream Byte Values").
const (
	zeroOp       = 0x00
	oneOp        = 0x01
	nameOp       = 0x08
	bytePrefix   = 0x0a
	wordPrefix   = 0x0b
	dwordPrefix  = 0x0c
	stringPrefix = 0x0d
	qwordPrefix  = 0x0e
	scopeOp      = 0x10
	bufferOp     = 0x11
	packageOp    = 0x12
	methodOp     = 0x14
	notifyOp     = 0x86
	extOpPrefix  = 0x5b
	deviceOp     = 0x82 // after extOpPrefix
	onesOp       = 0xff

	rootChar        = '\\'
	parentPrefix    = '^'
	dualNamePrefix  = 0x2e
	multiNamePrefix = 0x2f
)

// pkgLength encodes a PkgLength (20.2.4) for a package whose contents after
// the PkgLength are n bytes long; the encoded length counts itself. One
// byte holds up to 63; otherwise bits 7-6 of the lead byte say how many
// bytes follow, its bits 3-0 are the low nibble and each following byte
// the next 8 bits.
func pkgLength(n int) []byte {
	if n+1 < 1<<6 {
		return []byte{byte(n + 1)}
	}
	for extra := 1; extra <= 3; extra++ {
		total := n + 1 + extra
		if total < 1<<(4+8*extra) {
			b := []byte{byte(extra<<6) | byte(total&0xf)}
			for i := 0; i < extra; i++ {
				b = append(b, byte(total>>(4+8*i)))
			}
			return b
		}
	}
	panic(fmt.Sprintf("aml: package of %d bytes exceeds the 2^28 PkgLength limit", n))
}

// pkg is opcode bytes, a PkgLength, then body.
func pkg(op []byte, body ...[]byte) []byte {
	var b []byte
	for _, x := range body {
		b = append(b, x...)
	}
	out := append(append([]byte(nil), op...), pkgLength(len(b))...)
	return append(out, b...)
}

// nameSeg checks and pads one NameSeg (20.2.2): a lead character A-Z or
// '_', then up to three of A-Z, 0-9, '_'; short segments are padded with
// '_' as iasl does.
func nameSeg(s string) []byte {
	if len(s) == 0 || len(s) > 4 {
		panic(fmt.Sprintf("aml: name segment %q: want 1 to 4 characters", s))
	}
	for i, c := range []byte(s) {
		ok := c == '_' || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9')
		if !ok {
			panic(fmt.Sprintf("aml: name segment %q: bad character %q", s, c))
		}
	}
	return []byte(s + strings.Repeat("_", 4-len(s)))
}

// NameString encodes an ASL name path such as "_S5", "\\_SB" or
// "\\_SB.COM1" (20.2.2): an optional root or parent prefixes, then one
// segment, a DualNamePath or a MultiNamePath.
func NameString(path string) []byte {
	var b []byte
	for len(path) > 0 && (path[0] == rootChar || path[0] == parentPrefix) {
		b = append(b, path[0])
		path = path[1:]
	}
	if path == "" {
		return append(b, zeroOp) // NullName
	}
	segs := strings.Split(path, ".")
	switch len(segs) {
	case 1:
	case 2:
		b = append(b, dualNamePrefix)
	default:
		if len(segs) > 255 {
			panic("aml: name path has more than 255 segments")
		}
		b = append(b, multiNamePrefix, byte(len(segs)))
	}
	for _, s := range segs {
		b = append(b, nameSeg(s)...)
	}
	return b
}

// Int encodes an integer constant in the shortest form (20.2.3): ZeroOp,
// OneOp, OnesOp for all 64 bits set (a revision-2 table's Ones), else a
// Byte, Word, DWord or QWord constant. iasl's optimizer picks the same.
func Int(v uint64) []byte {
	switch {
	case v == 0:
		return []byte{zeroOp}
	case v == 1:
		return []byte{oneOp}
	case v == ^uint64(0):
		return []byte{onesOp}
	case v <= 0xff:
		return []byte{bytePrefix, byte(v)}
	case v <= 0xffff:
		return binary.LittleEndian.AppendUint16([]byte{wordPrefix}, uint16(v))
	case v <= 0xffffffff:
		return binary.LittleEndian.AppendUint32([]byte{dwordPrefix}, uint32(v))
	}
	return binary.LittleEndian.AppendUint64([]byte{qwordPrefix}, v)
}

// String encodes an ASCII string constant (20.2.3: StringPrefix, the
// characters 0x01-0x7f, NUL).
func String(s string) []byte {
	for _, c := range []byte(s) {
		if c == 0 || c > 0x7f {
			panic(fmt.Sprintf("aml: string %q: not ASCII without NUL", s))
		}
	}
	return append(append([]byte{stringPrefix}, s...), 0)
}

// EISAID encodes ASL's EISAID("PNP0501") (19.6.35): three letters and four
// hex digits compressed into a 32-bit integer, stored big-endian.
func EISAID(id string) []byte {
	if len(id) != 7 {
		panic(fmt.Sprintf("aml: EISA ID %q: want 3 letters and 4 hex digits", id))
	}
	var v uint32
	for _, c := range []byte(id[:3]) {
		if c < 'A' || c > 'Z' {
			panic(fmt.Sprintf("aml: EISA ID %q: %q is not a capital letter", id, c))
		}
		v = v<<5 | uint32(c-'@')
	}
	for _, c := range []byte(id[3:]) {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			panic(fmt.Sprintf("aml: EISA ID %q: %q is not a hex digit", id, c))
		}
		v = v<<4 | uint32(d)
	}
	var be [4]byte
	binary.BigEndian.PutUint32(be[:], v)
	return Int(uint64(binary.LittleEndian.Uint32(be[:])))
}

// Name is ASL's Name(path, value) (20.2.5.1, DefName).
func Name(path string, value []byte) []byte {
	return append(append([]byte{nameOp}, NameString(path)...), value...)
}

// Scope is ASL's Scope(path) { terms } (20.2.5.1, DefScope).
func Scope(path string, terms ...[]byte) []byte {
	return pkg([]byte{scopeOp}, append([][]byte{NameString(path)}, terms...)...)
}

// Device is ASL's Device(path) { terms } (20.2.5.2, DefDevice).
func Device(path string, terms ...[]byte) []byte {
	return pkg([]byte{extOpPrefix, deviceOp}, append([][]byte{NameString(path)}, terms...)...)
}

// Method is ASL's Method(path, args, Serialized or NotSerialized) { terms }
// (20.2.5.2, DefMethod): MethodFlags hold the argument count (0-7) in bits
// 2-0 and the serialize flag in bit 3; the sync level stays 0.
func Method(path string, args int, serialized bool, terms ...[]byte) []byte {
	if args < 0 || args > 7 {
		panic(fmt.Sprintf("aml: method %s: %d arguments, want 0 to 7", path, args))
	}
	flags := byte(args)
	if serialized {
		flags |= 1 << 3
	}
	return pkg([]byte{methodOp}, append([][]byte{NameString(path), {flags}}, terms...)...)
}

// Notify is ASL's Notify(path, value) (20.2.5.3, DefNotify): the object is
// a name, the value an integer constant.
func Notify(path string, value uint64) []byte {
	return append(append([]byte{notifyOp}, NameString(path)...), Int(value)...)
}

// Package is ASL's Package() { elements } (20.2.5.4, DefPackage), at most
// 255 elements.
func Package(elems ...[]byte) []byte {
	if len(elems) > 255 {
		panic("aml: Package of more than 255 elements needs VarPackage")
	}
	return pkg([]byte{packageOp}, append([][]byte{{byte(len(elems))}}, elems...)...)
}

// Buffer is ASL's Buffer() { bytes } (20.2.5.4, DefBuffer): the size as an
// integer, then the bytes.
func Buffer(data []byte) []byte {
	return pkg([]byte{bufferOp}, Int(uint64(len(data))), data)
}
