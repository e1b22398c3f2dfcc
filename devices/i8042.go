package devices

// I8042 is the minimum of the PS/2 controller a Linux guest needs: a status
// register that never blocks, and command 0xFE (pulse the reset line), which
// is how `reboot=k` and our guest agent ask for a reset.
type I8042 struct {
	// OnReset is called (from a vCPU thread) when the guest asks for a reset.
	OnReset func()
}

const (
	i8042DataPort  = 0x0 // offset of port 0x60 in the window starting at 0x60
	i8042CmdPort   = 0x4 // offset of port 0x64
	i8042CmdReset  = 0xfe
	i8042StatusReg = 0x00 // output buffer empty, input buffer empty
)

func (d *I8042) Read(off uint64, data []byte) {
	for i := range data {
		data[i] = 0
	}
	if off == i8042CmdPort {
		data[0] = i8042StatusReg
	}
}

func (d *I8042) Write(off uint64, data []byte) {
	if off == i8042CmdPort && len(data) == 1 && data[0] == i8042CmdReset && d.OnReset != nil {
		d.OnReset()
	}
}
