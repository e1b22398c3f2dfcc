/*
 * QEMU smoke-test shim (NOT used by the VMM): lets `qemu-system-x86_64
 * -kernel` boot a micro-guest through QEMU's PVH entry and hands it the same
 * environment the VMM does (64-bit mode, identity map, CS=0x10, DS=0x18,
 * %rsi = boot_params at 0x7000).  The guest's loadable bytes are included
 * verbatim at 0x200000 (GUEST_BIN, made by objcopy -O binary).
 */
#define BOOT_PARAMS	0x7000
#define BOOT_STACK	0x8ff0
#define GUEST_ENTRY	0x200000
#define MAP_GIB		16

	/* PVH entry point note; QEMU reads the descriptor as a 64-bit value. */
	.section .note.pvh, "a", @note
	.balign	4
	.long	4			/* namesz */
	.long	8			/* descsz */
	.long	18			/* XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz	"Xen"
	.balign	4
	.quad	pvh_start

	.section .text.pvh, "ax"
	.code32
	.globl	pvh_start
pvh_start:
	cli
	cld
	movl	%ebx, pvh_start_info	/* struct hvm_start_info * */
	movl	$shim_stack_top, %esp

	/* PDs: identity map [0, MAP_GIB GiB) with 2 MiB pages. */
	xorl	%ecx, %ecx
1:	movl	%ecx, %eax
	shll	$21, %eax
	orl	$0x83, %eax
	movl	%eax, shim_pd(,%ecx,8)
	movl	%ecx, %eax
	shrl	$11, %eax
	movl	%eax, shim_pd+4(,%ecx,8)
	incl	%ecx
	cmpl	$(MAP_GIB * 512), %ecx
	jb	1b
	/* PDPT entries -> PDs; PML4[0] -> PDPT. */
	xorl	%ecx, %ecx
2:	movl	%ecx, %eax
	shll	$12, %eax
	addl	$(shim_pd + 3), %eax
	movl	%eax, shim_pdpt(,%ecx,8)
	incl	%ecx
	cmpl	$MAP_GIB, %ecx
	jb	2b
	movl	$(shim_pdpt + 3), shim_pml4

	/* The boot GDT lives at 0x500, as with the VMM. */
	movl	$shim_gdt, %esi
	movl	$0x500, %edi
	movl	$(shim_gdt_end - shim_gdt), %ecx
	rep movsb
	lgdt	shim_gdt_desc

	movl	%cr4, %eax
	orl	$0x20, %eax		/* PAE */
	movl	%eax, %cr4
	movl	$shim_pml4, %eax
	movl	%eax, %cr3
	movl	$0xc0000080, %ecx	/* EFER.LME */
	rdmsr
	orl	$0x100, %eax
	wrmsr
	movl	%cr0, %eax
	orl	$0x80000001, %eax	/* PG | PE */
	movl	%eax, %cr0
	ljmpl	$0x10, $pvh_long

	.code64
pvh_long:
	movl	$0x18, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss
	movl	pvh_start_info, %edi
	call	shim_main		/* fills boot_params */
	movl	$BOOT_PARAMS, %esi
	movl	$BOOT_STACK, %esp
	movl	$GUEST_ENTRY, %eax
	jmp	*%rax

	.section .data.pvh, "aw"
	.balign	8
shim_gdt:
	.quad	0
	.quad	0
	.quad	0x00af9a000000ffff	/* 0x10: 64-bit code */
	.quad	0x00cf92000000ffff	/* 0x18: data */
shim_gdt_end:
shim_gdt_desc:
	.word	shim_gdt_end - shim_gdt - 1
	.long	0x500
pvh_start_info:
	.long	0

	.section .bss.pvh, "aw", @nobits
	.balign	4096
shim_pml4:	.skip	4096
shim_pdpt:	.skip	4096
shim_pd:	.skip	4096 * MAP_GIB
	.balign	16
	.skip	16384
shim_stack_top:

	/* The guest's text+rodata, exactly as in its .elf. */
	.section .guest, "awx"
	.incbin	GUEST_BIN

	.section .note.GNU-stack, "", @progbits
