package virtio

import (
	"bytes"
	"testing"

	"github.com/microvm-dev/microvm/internal/snapshot"
)

// TestTransportSnapshot: a paused device serves nothing; its saved state,
// restored into a new transport over a copy of guest memory, carries on
// from the same ring indices, and so does the original once resumed.
func TestTransportSnapshot(t *testing.T) {
	r := make(ram, tRAM)
	tr := NewMMIO("virtio-rng test", RNG{}, r, &fakeIRQ{}, t.Logf, failOnPanic(t))
	defer tr.Close()
	if !driverInit(tr, FeatureVersion1) {
		t.Fatal("driver init")
	}
	request(t, tr, r, 16, "the first request")
	tr.Pause()
	st, err := tr.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	// The guest is paused in a real machine; here a notification arrives
	// anyway and must wait for Resume.
	putDescs(r, tDesc, []desc{{tData, 16, descFWrite, 0}})
	r2 := ram(bytes.Clone(r)) // the memory file: the chain is offered in it too
	offer(r, 0)
	offer(r2, 0)
	tr.Notify(0)

	tr2 := NewMMIO("virtio-rng test", RNG{}, r2, &fakeIRQ{}, t.Logf, failOnPanic(t))
	defer tr2.Close()
	if err := tr2.RestoreState(st); err != nil {
		t.Fatal(err)
	}
	if reg32(tr2, regStatus) != reg32(tr, regStatus) || reg32(tr2, regQueueReady) != 1 {
		t.Errorf("restored status %#x, queue ready %d", reg32(tr2, regStatus), reg32(tr2, regQueueReady))
	}
	waitFor(t, "the restored device to serve the pending chain", func() bool { return usedIdx(r2, tUsed) == 2 })
	if usedIdx(r, tUsed) != 1 {
		t.Fatal("the paused device served a chain")
	}
	tr.Resume()
	waitFor(t, "the resumed device to serve the pending chain", func() bool { return usedIdx(r, tUsed) == 2 })
	request(t, tr2, r2, 8, "a request after the restore")
}

// TestRestoreBadState: damaged or inconsistent transport states are
// refused, none panics, and the device stays unused.
func TestRestoreBadState(t *testing.T) {
	r := make(ram, tRAM)
	tr := NewMMIO("virtio-rng test", RNG{}, r, &fakeIRQ{}, t.Logf, failOnPanic(t))
	defer tr.Close()
	driverInit(tr, FeatureVersion1)
	tr.Pause()
	good, _ := tr.SaveState()
	running := good.Data
	// status is the first field: a "running" device without DRIVER_OK.
	noDriverOK := bytes.Clone(running)
	noDriverOK[0] &^= StatusDriverOK
	for name, st := range map[string]snapshot.DeviceState{
		"version":      {Version: 9, Data: running},
		"truncated":    {Version: good.Version, Data: running[:len(running)/2]},
		"trailing":     {Version: good.Version, Data: append(bytes.Clone(running), 0)},
		"no DRIVER_OK": {Version: good.Version, Data: noDriverOK},
		"empty":        {Version: good.Version},
	} {
		fresh := NewMMIO("virtio-rng test", RNG{}, r, &fakeIRQ{}, t.Logf, failOnPanic(t))
		if err := fresh.RestoreState(st); err == nil {
			t.Errorf("%s: restored", name)
		}
		if fresh.run != nil || fresh.live {
			t.Errorf("%s: the device was left live", name)
		}
		fresh.Close()
	}
}

func TestConsoleState(t *testing.T) {
	c := NewChannels("microvm.agent")
	s := &conState{c: c}
	s.handle(ControlMsg{Event: conDeviceReady, Value: 1})
	c.Ports[0].setOpen(true)
	st, err := c.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	c2 := NewChannels("microvm.agent")
	if err := c2.RestoreState(st); err != nil {
		t.Fatal(err)
	}
	if !c2.Ports[0].GuestOpen() || len(c2.ctrlOut) != len(c.ctrlOut) || !bytes.Equal(c2.ctrlOut[0], c.ctrlOut[0]) {
		t.Errorf("restored open %v, %d control replies (want %d)", c2.Ports[0].GuestOpen(), len(c2.ctrlOut), len(c.ctrlOut))
	}
	if err := NewChannels("a", "b").RestoreState(st); err == nil {
		t.Error("a state for one port restored into a device with two")
	}
	b := NewBlock(errFile{}, 1<<20, true, "disk")
	bst, _ := b.SaveState()
	if err := NewBlock(errFile{}, 2<<20, true, "disk").RestoreState(bst); err == nil {
		t.Error("a disk of another size accepted")
	}
}

// FuzzRestoreState: whatever bytes a (crafted, checksum-fixed) snapshot
// holds for a device, restoring them is an error or a working device, never
// a panic; a device restored running still answers a reset.
func FuzzRestoreState(f *testing.F) {
	r := make(ram, tRAM)
	tr := NewMMIO("seed", RNG{}, r, &fakeIRQ{}, func(string, ...any) {}, func(error) {})
	driverInit(tr, FeatureVersion1)
	tr.Pause()
	st, _ := tr.SaveState()
	tr.Close()
	f.Add(st.Data, uint8(0))
	cst, _ := NewChannels("x").SaveState()
	f.Add(cst.Data, uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, which uint8) {
		r := make(ram, tRAM)
		var dev Device = RNG{}
		if which%2 == 1 {
			dev = NewChannels("x")
		}
		tr := NewMMIO("fuzz", dev, r, &fakeIRQ{}, func(string, ...any) {}, func(err error) { t.Fatalf("fatal: %v", err) })
		defer tr.Close()
		if err := tr.RestoreState(snapshot.DeviceState{Version: mmioStateVersion, Data: data}); err != nil {
			return
		}
		set32(tr, regStatus, 0)
		if tr.run != nil {
			t.Fatal("a reset left the restored device running")
		}
	})
}
