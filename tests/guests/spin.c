/* spin: prints a banner and halts forever; the VMM's --timeout must stop it. */
#include "common.h"

void guest_main(uintptr_t bp)
{
	(void)bp;
	gprintf("microguest: spin\n");
	for (;;)
		__asm__ volatile("cli\n1:\thlt\n\tjmp 1b" ::: "memory");
}
