/*
 * counter: a computation a snapshot must carry over (issue 15). It counts
 * in memory and prints "count N" after each step of about 2^24 TSC ticks;
 * restored from a snapshot it carries on from where it was, without a
 * second "counter: start". limit=N (cmdline) ends it after count N.
 */
#include "common.h"

static volatile uint64_t count;

void guest_main(uintptr_t bp)
{
	uint64_t limit = 0;
	(void)bp;
	cmdline_get_u64(bp_cmdline(), "limit", &limit);
	gprintf("counter: start\n");
	for (;;) {
		tsc_delay(1ULL << 24);
		count++;
		gprintf("count %lu\n", (unsigned long)count);
		if (limit && count >= limit)
			guest_done();
	}
}
