/*
 * triple: loads an empty IDT (limit 0) and executes ud2.  #UD cannot be
 * delivered -> #GP -> #DF -> triple fault, which KVM reports as
 * KVM_EXIT_SHUTDOWN.  Nothing is printed after the banner.
 */
#include "common.h"

void guest_main(uintptr_t bp)
{
	static const struct {
		uint16_t limit;
		uint64_t base;
	} __attribute__((packed)) empty_idt = { 0, 0 };

	(void)bp;
	gprintf("microguest: triple\n");
	__asm__ volatile("lidt %0\n\t"
			 "ud2"
			 :
			 : "m"(empty_idt)
			 : "memory");
	/* Not reached: we only get here if the VMM somehow resumed us. */
	halt_forever();
}
