package virtio

import (
	"bytes"
	"fmt"

	"github.com/microvm-dev/microvm/internal/snapshot"
)

// The virtio devices' own snapshot states, nested in their transport's
// (MMIO.SaveState). What a device knows of the host (the disk image, the
// TAP) is the machine's configuration, checked before a restore; these
// states hold what the guest changed.

const consoleStateVersion = 1

// SaveState saves which ports the guest has open and the control replies
// it has not taken yet. Host bytes queued for the guest are not part of
// it: they belong to the host end, which a restore replaces.
func (c *Console) SaveState() (snapshot.DeviceState, error) {
	var e snapshot.Encoder
	e.U32(uint32(len(c.Ports)))
	for _, p := range c.Ports {
		e.Bool(p.GuestOpen())
	}
	e.U32(uint32(len(c.ctrlOut)))
	for _, m := range c.ctrlOut {
		e.Blob(m)
	}
	return snapshot.DeviceState{Version: consoleStateVersion, Data: e.Bytes()}, nil
}

func (c *Console) RestoreState(st snapshot.DeviceState) error {
	d, err := st.Decoder(consoleStateVersion, "virtio-console")
	if err != nil {
		return err
	}
	n := d.Count(len(c.Ports), 1)
	if d.Err() == nil && n != len(c.Ports) {
		d.Fail("%d ports saved, the device has %d", n, len(c.Ports))
	}
	open := make([]bool, n)
	for i := range open {
		open[i] = d.Bool()
	}
	var ctrl [][]byte
	for range d.Count(conMaxCtrlOut, 4) {
		m := d.Blob(conCtrlLen + 256)
		if _, err := ParseControl(m); err != nil {
			d.Fail("control reply: %v", err)
		}
		ctrl = append(ctrl, bytes.Clone(m))
	}
	if err := d.Finish(); err != nil {
		return fmt.Errorf("virtio-console: %w", err)
	}
	for i, p := range c.Ports {
		p.setOpen(open[i])
	}
	c.ctrlOut = ctrl
	return nil
}

const blkStateVersion = 1

// SaveState records the disk as the guest sees it. The image's identity
// (which file, its size and mtime) is checked by the machine before a
// restore; this is the device's own consistency check.
func (b *Block) SaveState() (snapshot.DeviceState, error) {
	var e snapshot.Encoder
	e.U64(b.sectors)
	e.Bool(b.readOnly)
	e.String(b.id)
	return snapshot.DeviceState{Version: blkStateVersion, Data: e.Bytes()}, nil
}

func (b *Block) RestoreState(st snapshot.DeviceState) error {
	d, err := st.Decoder(blkStateVersion, "virtio-blk")
	if err != nil {
		return err
	}
	sectors, ro, id := d.U64(), d.Bool(), d.String(256)
	if err := d.Finish(); err != nil {
		return fmt.Errorf("virtio-blk: %w", err)
	}
	if sectors != b.sectors || ro != b.readOnly || id != b.id {
		return fmt.Errorf("virtio-blk: the snapshot's disk %q had %d sectors (read-only %v); this one %q has %d (read-only %v)", id, sectors, ro, b.id, b.sectors, b.readOnly)
	}
	return nil
}

const netStateVersion = 1

// SaveState records the MAC the guest was given; frames in flight are not
// kept (a NIC drops them too).
func (d *Net) SaveState() (snapshot.DeviceState, error) {
	var e snapshot.Encoder
	e.Blob(d.mac)
	return snapshot.DeviceState{Version: netStateVersion, Data: e.Bytes()}, nil
}

func (d *Net) RestoreState(st snapshot.DeviceState) error {
	dec, err := st.Decoder(netStateVersion, "virtio-net")
	if err != nil {
		return err
	}
	mac := dec.Blob(6)
	if err := dec.Finish(); err != nil {
		return fmt.Errorf("virtio-net: %w", err)
	}
	if !bytes.Equal(mac, d.mac) {
		return fmt.Errorf("virtio-net: the snapshot's MAC is %x, this device's %s", mac, d.mac)
	}
	return nil
}

// The RNG keeps nothing: every request is answered from getrandom.

func (RNG) SaveState() (snapshot.DeviceState, error)  { return snapshot.Stateless{}.SaveState() }
func (RNG) RestoreState(s snapshot.DeviceState) error { return snapshot.Stateless{}.RestoreState(s) }
