#include "textflag.h"

// Raw x86 port output. The calling thread must have I/O permission for the
// port (ioperm), otherwise the instruction faults with SIGSEGV.

// func outb(port uint16, val uint8)
TEXT ·outb(SB), NOSPLIT, $0-3
	MOVW port+0(FP), DX
	MOVB val+2(FP), AX
	OUTB
	RET

// func outl(port uint16, val uint32)
TEXT ·outl(SB), NOSPLIT, $0-8
	MOVW port+0(FP), DX
	MOVL val+4(FP), AX
	OUTL
	RET
