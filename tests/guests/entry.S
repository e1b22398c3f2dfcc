/*
 * Common 64-bit entry point of every micro-guest.
 *
 * Entered per the Linux x86_64 boot protocol: long mode, identity map,
 * interrupts off, %rsi = boot_params.  We clear .bss (the VMM is not required
 * to zero p_memsz beyond p_filesz), switch to our own stack and call
 * guest_start(boot_params) in common.c, which records boot_params and runs
 * guest_main().  If that returns, the guest is done: guest_done() writes 0x10
 * to the debug port and resets via the i8042.
 */
	.section .text.entry, "ax"
	.code64
	.globl	_start
	.type	_start, @function
_start:
	cli
	cld
	movq	%rsi, %r12			/* boot_params (callee-saved) */

	movq	$__bss_start, %rdi
	movq	$__bss_end, %rcx
	subq	%rdi, %rcx
	xorl	%eax, %eax
	rep stosb

	movq	$boot_stack_top, %rsp
	xorl	%ebp, %ebp
	movq	%r12, %rdi
	call	guest_start			/* does not return */
1:	cli
	hlt
	jmp	1b
	.size	_start, . - _start

	.section .bss.boot_stack, "aw", @nobits
	.balign	16
boot_stack:
	.skip	16384
boot_stack_top:

	.section .note.GNU-stack, "", @progbits
