package boot

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/microvm-dev/microvm/internal/testimg"
	"github.com/microvm-dev/microvm/internal/vmm/layout"
)

func TestParseKernel(t *testing.T) {
	good := testimg.BzImage(4096)
	mut := func(f func(b []byte) []byte) []byte {
		return f(append([]byte(nil), good...))
	}
	elf32 := append([]byte("\x7fELF\x01\x01\x01"), make([]byte, 60)...)
	tests := []struct {
		name    string
		img     []byte
		format  string
		wantErr string
	}{
		{"bzImage", good, "bzImage", ""},
		{"empty", nil, "", "empty"},
		{"text", []byte("hello, world, this is not a kernel at all"), "", "not a bootable kernel"},
		{"truncated header", good[:0x210], "", "truncated"},
		{"truncated payload", good[:len(good)-100], "", "truncated bzImage"},
		{"old protocol", mut(func(b []byte) []byte { binary.LittleEndian.PutUint16(b[bpVersion:], 0x0209); return b }), "", "too old"},
		{"32-bit only", mut(func(b []byte) []byte { b[bpXLoadflags] = 0; return b }), "", "XLF_KERNEL_64"},
		{"bad boot flag", mut(func(b []byte) []byte { b[bpBootFlag] = 0; return b }), "", "boot_flag"},
		{"zImage", mut(func(b []byte) []byte { b[bpLoadflags] = 0; return b }), "", "zImage"},
		{"elf64", testimg.ELF(0x200000, testimg.Seg{Paddr: 0x200000, Memsz: 0x2000, Data: []byte{0xf4}}), "ELF", ""},
		{"elf32", elf32, "", "32-bit ELF"},
		{"elf truncated", []byte("\x7fELF"), "", "truncated ELF"},
		{"elf overlap", testimg.ELF(0x200000, testimg.Seg{Paddr: 0x200000, Memsz: 0x2000, Data: []byte{1}}, testimg.Seg{Paddr: 0x201000, Memsz: 0x1000, Data: []byte{2}}), "", "overlap"},
		{"elf low", testimg.ELF(0x1000, testimg.Seg{Paddr: 0x1000, Memsz: 0x1000, Data: []byte{1}}), "", "below 1 MiB"},
		{"elf huge", testimg.ELF(0x200000, testimg.Seg{Paddr: 0x200000, Memsz: 1 << 62, Data: []byte{1}}), "", "out of range"},
		{"elf entry outside", testimg.ELF(0x900000, testimg.Seg{Paddr: 0x200000, Memsz: 0x1000, Data: []byte{1}}), "", "entry point"},
		{"elf no segments", testimg.ELF(0x200000), "", "no loadable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := ParseKernel("img", tt.img)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if k.Format != tt.format {
				t.Fatalf("format %q, want %q", k.Format, tt.format)
			}
		})
	}
}

func TestBzImageBootParams(t *testing.T) {
	k, err := ParseKernel("bz", testimg.BzImage(8192))
	if err != nil {
		t.Fatal(err)
	}
	if k.Entry != 0x100200 || k.End != 0x100000+4*layout.MiB || k.CmdlineMax != 2047 || k.InitrdAddrMax != 0x7fffffff {
		t.Fatalf("kernel = %+v", k)
	}
	bp := k.BootParams()
	bp.SetCmdline(0x20000)
	bp.SetRamdisk(0x1_2345_6000, 0x1000)
	bp.SetE820(E820([]Range{{0, 3 * layout.GiB}, {4 * layout.GiB, 3 * layout.GiB}}, false))
	le := binary.LittleEndian
	for _, c := range []struct {
		name string
		off  int
		size int
		want uint64
	}{
		{"boot_flag", 0x1fe, 2, 0xaa55},
		{"header", 0x202, 4, 0x53726448},
		{"version", 0x206, 2, 0x020f},
		{"type_of_loader", 0x210, 1, 0xff},
		{"loadflags", 0x211, 1, loadedHigh | canUseHeap},
		{"ramdisk_image", 0x218, 4, 0x23456000},
		{"ramdisk_size", 0x21c, 4, 0x1000},
		{"ext_ramdisk_image", 0x0c0, 4, 1},
		{"heap_end_ptr", 0x224, 2, 0xfe00},
		{"cmd_line_ptr", 0x228, 4, 0x20000},
		{"ext_cmd_line_ptr", 0x0c8, 4, 0},
		{"vid_mode", 0x1fa, 2, 0xffff},
		{"e820_entries", 0x1e8, 1, 4},
		{"e820[3].addr", 0x2d0 + 3*20, 8, 4 * layout.GiB},
		{"e820[3].size", 0x2d0 + 3*20 + 8, 8, 3 * layout.GiB},
		{"e820[3].type", 0x2d0 + 3*20 + 16, 4, 1},
		{"e820[1].type", 0x2d0 + 1*20 + 16, 4, 2},
	} {
		var got uint64
		switch c.size {
		case 1:
			got = uint64(bp[c.off])
		case 2:
			got = uint64(le.Uint16(bp[c.off:]))
		case 4:
			got = uint64(le.Uint32(bp[c.off:]))
		case 8:
			got = le.Uint64(bp[c.off:])
		}
		if got != c.want {
			t.Errorf("%s at %#x = %#x, want %#x", c.name, c.off, got, c.want)
		}
	}
}

func TestInitrdPlacement(t *testing.T) {
	k, _ := ParseKernel("bz", testimg.BzImage(4096))
	addr, err := k.InitrdAddr(256*layout.MiB, 10*layout.MiB)
	if err != nil || addr != 246*layout.MiB {
		t.Fatalf("addr %#x err %v, want %#x", addr, err, 246*layout.MiB)
	}
	// initrd_addr_max caps placement even with RAM above it.
	addr, err = k.InitrdAddr(6*layout.GiB, 10*layout.MiB)
	if err != nil || addr+10*layout.MiB > 0x80000000 {
		t.Fatalf("addr %#x err %v: above initrd_addr_max", addr, err)
	}
	elf, _ := ParseKernel("elf", testimg.ELF(0x200000, testimg.Seg{Paddr: 0x200000, Memsz: 0x1000, Data: []byte{1}}))
	if addr, err := elf.InitrdAddr(256*layout.MiB, 2*layout.MiB); err != nil || addr != 254*layout.MiB {
		t.Fatalf("ELF (no initrd_addr_max): addr %#x err %v, want %#x", addr, err, 254*layout.MiB)
	}
	if _, err := k.InitrdAddr(256*layout.MiB, 300*layout.MiB); err == nil {
		t.Fatal("initrd larger than RAM accepted")
	}
	if err := k.CheckFits(layout.MinMemory); err != nil {
		t.Fatalf("4 MiB kernel should fit in %d MiB: %v", layout.MinMemory/layout.MiB, err)
	}
	big, _ := ParseKernel("big", testimg.ELF(0x200000, testimg.Seg{Paddr: 0x200000, Memsz: 64 * layout.MiB, Data: []byte{1}}))
	if err := big.CheckFits(layout.MinMemory); err == nil {
		t.Fatalf("64 MiB segment in %d MiB guest: err = %v", layout.MinMemory/layout.MiB, err)
	}
}
