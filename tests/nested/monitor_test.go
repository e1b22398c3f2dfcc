package nested

import "testing"

func TestCPUState(t *testing.T) {
	regs := "CPU#0\nRAX=0000000000000000 RBX=ffff88800f300000\nRIP=ffffffff8103c2d2 RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=0\n" +
		"ES =0000 0000000000000000 00000000 00000000\nGS =0000 ffff88800f300000 00000000 00000000\n" +
		"CPU#1\nRIP=00007f0000001000 RFL=00000202 [-------] CPL=3 II=0 A20=1 SMM=0 HLT=1\nGS =0000 0000000000000000 00000000 00000000\n"
	want := "RIP=ffffffff8103c2d2 CPL=0 GS.base=ffff88800f300000; RIP=00007f0000001000 CPL=3 GS.base=0000000000000000"
	if got := cpuState(regs); got != want {
		t.Errorf("cpuState = %q\nwant %q", got, want)
	}
}
