/*
 * spin: prints a banner and busy-loops forever; the VMM's --timeout must stop
 * it. (A `cli; hlt` guest would count as powered off: that is how a Linux
 * guest without ACPI ends a poweroff.)
 */
#include "common.h"

void guest_main(uintptr_t bp)
{
	(void)bp;
	gprintf("microguest: spin\n");
	for (;;)
		__asm__ volatile("pause" ::: "memory");
}
