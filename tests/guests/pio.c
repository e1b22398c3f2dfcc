/*
 * pio: exit-path benchmark.  Performs `count` (cmdline "count=<decimal>",
 * default 100000) 32-bit OUTs to the no-op debug register 0x3f4, bracketed
 * by debug-port milestones 0x11 (start) and 0x12 (end).
 */
#include "common.h"

#define DEFAULT_COUNT 100000

void guest_main(uintptr_t bp)
{
	uint64_t count = DEFAULT_COUNT;

	(void)bp;
	if (!cmdline_get_u64(bp_cmdline(), "count", &count))
		count = DEFAULT_COUNT;

	gprintf("pio: start\n");
	outb(DEBUG_PORT, DBG_PIO_START);
	for (uint64_t i = 0; i < count; i++)
		outl(DEBUG_NOP_PORT, (uint32_t)i);
	outb(DEBUG_PORT, DBG_PIO_END);
	gprintf("pio: done %lu\n", (unsigned long)count);
}
