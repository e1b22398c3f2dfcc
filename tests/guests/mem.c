/*
 * mem: finds the top of RAM from the e820 map and checks that memory above
 * 4 GiB (and one address in low RAM) really is RAM: write distinct 64-bit
 * patterns, then read them all back.
 */
#include "common.h"

#define FOUR_GIB (4 * GiB)
/* The boot identity map stops at 16 GiB; never touch anything above it. */
#define IDMAP_LIMIT (16 * GiB)
/* Low-RAM probe: inside the guest-free area 0x30000-0x9efff. */
#define LOW_PROBE 0x80000ULL
#define MAX_PROBES 3

static uint64_t pattern(unsigned i, uint64_t addr)
{
	return 0x5a17c0de00000000ULL ^ (addr * 0x9e3779b97f4a7c15ULL) ^
	       ((uint64_t)(i + 1) << 56);
}

/* Returns 0 if all good, else the first bad address (addresses are never 0). */
static uint64_t probe(const uint64_t *addrs, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		*(volatile uint64_t *)(uintptr_t)addrs[i] = pattern(i, addrs[i]);
	__asm__ volatile("mfence" ::: "memory");
	for (unsigned i = 0; i < n; i++)
		if (*(volatile uint64_t *)(uintptr_t)addrs[i] !=
		    pattern(i, addrs[i]))
			return addrs[i];
	return 0;
}

void guest_main(uintptr_t bp)
{
	(void)bp;
	uint64_t top = e820_ram_top();

	gprintf("mem: top=0x%lx\n", (unsigned long)top);

	if (top > FOUR_GIB) {
		uint64_t lim = top < IDMAP_LIMIT ? top : IDMAP_LIMIT;
		uint64_t cand[MAX_PROBES] = {
			FOUR_GIB + MiB,
			(FOUR_GIB + (lim - FOUR_GIB) / 2) & ~7ULL,
			lim - 4096,
		};
		uint64_t addrs[MAX_PROBES];
		unsigned n = 0;

		/* Keep in-RAM, distinct addresses (small regions may collapse). */
		for (unsigned i = 0; i < MAX_PROBES; i++) {
			int dup = 0;
			for (unsigned j = 0; j < n; j++)
				dup |= addrs[j] == cand[i];
			if (!dup && cand[i] >= FOUR_GIB && cand[i] + 8 <= lim &&
			    e820_is_ram(cand[i], 8))
				addrs[n++] = cand[i];
		}
		uint64_t bad = probe(addrs, n);
		if (bad)
			gprintf("mem: high BAD at 0x%lx\n", (unsigned long)bad);
		else
			gprintf("mem: high ok %u\n", n);
	} else {
		gprintf("mem: no high memory\n");
	}

	uint64_t low = LOW_PROBE;
	uint64_t bad = probe(&low, 1);
	if (bad)
		gprintf("mem: low BAD at 0x%lx\n", (unsigned long)bad);
	else
		gprintf("mem: low ok 1\n");
}
