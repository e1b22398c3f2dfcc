/*
 * AP startup trampoline for smp.elf.
 *
 * The BSP copies [ap_tramp_start, ap_tramp_end) to TRAMP_BASE (0x30000), fills
 * in tramp_cr3 / tramp_stack_base, and sends INIT + SIPI(vector 0x30).  The AP
 * starts in real mode at CS:IP = 0x3000:0000 and goes
 *   real mode -> 32-bit protected mode (flat GDT below) -> long mode
 * using the BSP-built identity map (tramp_cr3, below 4 GiB), takes a ticket
 * (lock xadd) to pick its own stack from tramp_stack_base, and calls the C
 * function ap_main(ticket), which never returns.
 *
 * This lives in .rodata: it is only ever executed from the copy.  Real-mode
 * addresses are offsets from ap_tramp_start (CS = DS = 0x3000); protected and
 * long mode addresses are absolute (TRAMP_BASE + offset).
 */
#define TRAMP_BASE	0x30000
#define OFF(x)		((x) - ap_tramp_start)
#define ABS(x)		(TRAMP_BASE + OFF(x))

#define SEL_CODE32	0x08
#define SEL_DATA	0x10
#define SEL_CODE64	0x18

#define AP_STACK_SHIFT	13		/* 8 KiB per AP; keep in sync with smp.c */
#define MAX_APS		63		/* keep in sync with smp.c (MAX_CPUS - 1) */

#define MSR_EFER	0xc0000080
#define EFER_LME	0x100
#define CR0_PE		0x1
#define CR0_PG		0x80000000
#define CR4_PAE		0x20

	.section .rodata.ap_tramp, "a"
	.balign	16
	.globl	ap_tramp_start, ap_tramp_end
	.globl	tramp_cr3, tramp_stack_base, tramp_ticket

	.code16
ap_tramp_start:
	cli
	cld
	movw	%cs, %ax
	movw	%ax, %ds
	lgdtl	OFF(tramp_gdt_desc)
	movl	%cr0, %eax
	orl	$CR0_PE, %eax
	movl	%eax, %cr0
	ljmpl	$SEL_CODE32, $ABS(ap_pm32)

	.code32
ap_pm32:
	movw	$SEL_DATA, %ax
	movw	%ax, %ds
	movw	%ax, %es
	movw	%ax, %ss
	movw	%ax, %fs
	movw	%ax, %gs

	/* Ticket = 0, 1, 2, ... in arrival order; selects the stack. */
	movl	$1, %edi
	lock xaddl %edi, ABS(tramp_ticket)
	cmpl	$MAX_APS, %edi
	jae	ap_park32
	leal	1(%edi), %ebx
	shll	$AP_STACK_SHIFT, %ebx
	addl	ABS(tramp_stack_base), %ebx	/* %ebx = top of this AP's stack */

	/* Enter long mode: PAE, CR3, EFER.LME, then paging. */
	movl	%cr4, %eax
	orl	$CR4_PAE, %eax
	movl	%eax, %cr4
	movl	ABS(tramp_cr3), %eax
	movl	%eax, %cr3
	movl	$MSR_EFER, %ecx
	rdmsr
	orl	$EFER_LME, %eax
	wrmsr
	movl	%cr0, %eax
	orl	$CR0_PG, %eax
	movl	%eax, %cr0
	ljmpl	$SEL_CODE64, $ABS(ap_lm64)

ap_park32:
	cli
	hlt
	jmp	ap_park32

	.code64
ap_lm64:
	movl	%ebx, %esp		/* zero-extends into %rsp */
	movl	%edi, %edi		/* ticket, zero-extended: 1st argument */
	xorl	%ebp, %ebp
	movabsq	$ap_main, %rax
	call	*%rax
1:	cli
	hlt
	jmp	1b

	.balign	8
tramp_gdt:
	.quad	0x0000000000000000	/* null */
	.quad	0x00cf9a000000ffff	/* 0x08: 32-bit code, flat */
	.quad	0x00cf92000000ffff	/* 0x10: data, flat */
	.quad	0x00af9a000000ffff	/* 0x18: 64-bit code */
tramp_gdt_end:
	.balign	4
tramp_gdt_desc:
	.word	tramp_gdt_end - tramp_gdt - 1
	.long	ABS(tramp_gdt)
	.balign	4
tramp_ticket:
	.long	0
tramp_cr3:
	.long	0
tramp_stack_base:
	.long	0
ap_tramp_end:

	.section .note.GNU-stack, "", @progbits
