package snapshot

// The payload, field by field, in the order Encode writes it. A change
// here is a change of FormatVersion.

func (f *File) encode(e *Encoder) {
	f.Meta.encode(e)
	for _, c := range f.VM.IRQChips {
		e.Blob(c)
	}
	e.Blob(f.VM.PIT)
	e.Blob(f.VM.Clock)
	e.U32(uint32(len(f.VCPUs)))
	for i := range f.VCPUs {
		f.VCPUs[i].encode(e)
	}
	e.U32(uint32(len(f.Devices)))
	for _, d := range f.Devices {
		e.String(d.Name)
		e.U8(d.Kind)
		e.U64(d.Base)
		e.U64(d.Size)
		e.U32(d.IRQ)
		e.U32(d.VirtioID)
		e.U32(d.State.Version)
		e.Blob(d.State.Data)
	}
	e.U64(f.Memory.Size)
	e.U32(uint32(len(f.Memory.Regions)))
	for _, r := range f.Memory.Regions {
		e.U64(r.GPA)
		e.U64(r.Size)
		e.U64(r.Offset)
	}
}

func (f *File) decode(d *Decoder) {
	f.Meta.decode(d)
	for i := range f.VM.IRQChips {
		f.VM.IRQChips[i] = d.Blob(maxKVMStruct)
	}
	f.VM.PIT = d.Blob(maxKVMStruct)
	f.VM.Clock = d.Blob(maxKVMStruct)
	n := d.Count(MaxVCPUs, 8)
	f.VCPUs = make([]VCPU, n)
	for i := range f.VCPUs {
		f.VCPUs[i].decode(d)
	}
	n = d.Count(MaxDevices, 4)
	f.Devices = make([]Device, n)
	for i := range f.Devices {
		dv := &f.Devices[i]
		dv.Name = d.String(maxString)
		dv.Kind = d.U8()
		dv.Base = d.U64()
		dv.Size = d.U64()
		dv.IRQ = d.U32()
		dv.VirtioID = d.U32()
		dv.State.Version = d.U32()
		dv.State.Data = d.Blob(maxDeviceData)
	}
	f.Memory.Size = d.U64()
	n = d.Count(maxRegions, 24)
	f.Memory.Regions = make([]Region, n)
	for i := range f.Memory.Regions {
		r := &f.Memory.Regions[i]
		r.GPA, r.Size, r.Offset = d.U64(), d.U64(), d.U64()
	}
}

func (m *Meta) encode(e *Encoder) {
	e.I64(m.CreatedUnixNS)
	e.String(m.Producer)
	e.U8(uint8(m.Point))
	m.Kernel.encode(e)
	m.Initrd.encode(e)
	e.String(m.Cmdline)
	e.U32(m.CPUs)
	e.U64(m.MemSize)
	e.U32(uint32(len(m.Disks)))
	for _, d := range m.Disks {
		d.ID.encode(e)
		e.Bool(d.ReadOnly)
	}
	encodeCPUID(e, m.HostCPUID)
}

func (m *Meta) decode(d *Decoder) {
	m.CreatedUnixNS = d.I64()
	m.Producer = d.String(maxString)
	m.Point = Point(d.U8())
	m.Kernel.decode(d)
	m.Initrd.decode(d)
	m.Cmdline = d.String(maxString)
	m.CPUs = d.U32()
	m.MemSize = d.U64()
	m.Disks = make([]Disk, d.Count(MaxDevices, 69))
	for i := range m.Disks {
		m.Disks[i].ID.decode(d)
		m.Disks[i].ReadOnly = d.Bool()
	}
	m.HostCPUID = decodeCPUID(d)
}

func (id *FileID) encode(e *Encoder) {
	e.String(id.Path)
	e.U64(id.Size)
	e.I64(id.MtimeNS)
	e.U64(id.Dev)
	e.U64(id.Ino)
	e.Blob(id.SHA256[:])
}

func (id *FileID) decode(d *Decoder) {
	id.Path = d.String(maxString)
	id.Size = d.U64()
	id.MtimeNS = d.I64()
	id.Dev = d.U64()
	id.Ino = d.U64()
	copy(id.SHA256[:], d.Exact(len(id.SHA256), "SHA-256"))
}

func (v *VCPU) encode(e *Encoder) {
	e.U32(v.ID)
	e.U32(v.MPState)
	for _, b := range [][]byte{v.Regs, v.Sregs, v.XSave, v.XCRs, v.DebugRegs, v.LAPIC, v.Events} {
		e.Blob(b)
	}
	encodeCPUID(e, v.CPUID)
	e.U32(uint32(len(v.MSRs)))
	for _, m := range v.MSRs {
		e.U32(m.Index)
		e.U64(m.Data)
	}
	e.U32(v.TSCKHz)
}

func (v *VCPU) decode(d *Decoder) {
	v.ID = d.U32()
	v.MPState = d.U32()
	v.Regs = d.Blob(maxKVMStruct)
	v.Sregs = d.Blob(maxKVMStruct)
	v.XSave = d.Blob(maxXSave)
	v.XCRs = d.Blob(maxKVMStruct)
	v.DebugRegs = d.Blob(maxKVMStruct)
	v.LAPIC = d.Blob(maxKVMStruct)
	v.Events = d.Blob(maxKVMStruct)
	v.CPUID = decodeCPUID(d)
	n := d.Count(maxMSRs, 12)
	v.MSRs = make([]MSR, n)
	for i := range v.MSRs {
		v.MSRs[i] = MSR{Index: d.U32(), Data: d.U64()}
	}
	v.TSCKHz = d.U32()
}

func encodeCPUID(e *Encoder, ents []CPUIDEntry) {
	e.U32(uint32(len(ents)))
	for _, c := range ents {
		for _, v := range []uint32{c.Function, c.Index, c.Flags, c.EAX, c.EBX, c.ECX, c.EDX} {
			e.U32(v)
		}
	}
}

func decodeCPUID(d *Decoder) []CPUIDEntry {
	n := d.Count(maxCPUID, 28)
	ents := make([]CPUIDEntry, n)
	for i := range ents {
		c := &ents[i]
		c.Function, c.Index, c.Flags = d.U32(), d.U32(), d.U32()
		c.EAX, c.EBX, c.ECX, c.EDX = d.U32(), d.U32(), d.U32(), d.U32()
	}
	return ents
}
