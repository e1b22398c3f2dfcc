package devices

import "encoding/binary"

// DebugPort is the boot/debug port. A 1-byte write at offset 0 records
// milestone `code`; a 4-byte write records the low byte as the code and the
// upper 24 bits as a value (e.g. a command's exit status). Offset 4 is a
// no-op register for measuring the raw exit path. Reads return 0.
type DebugPort struct {
	// OnMilestone is called from the vCPU thread; it must be cheap.
	OnMilestone func(code uint8, value uint32)
}

// DebugPortNoop is the offset of the register that does nothing.
const DebugPortNoop = 4

func (d *DebugPort) Read(off uint64, data []byte) {
	for i := range data {
		data[i] = 0
	}
}

func (d *DebugPort) Write(off uint64, data []byte) {
	if off != 0 || d.OnMilestone == nil {
		return
	}
	switch len(data) {
	case 1:
		d.OnMilestone(data[0], 0)
	case 4:
		v := binary.LittleEndian.Uint32(data)
		d.OnMilestone(uint8(v), v>>8)
	}
}
