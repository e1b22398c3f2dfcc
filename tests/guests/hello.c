/*
 * hello: prints the boot_params the VMM handed over (cmdline, e820 map and
 * an FNV-1a checksum of the initrd), then signals done and resets.
 */
#include "common.h"

#define FNV_OFFSET 2166136261u
#define FNV_PRIME 16777619u

static uint32_t fnv1a(const volatile uint8_t *p, uint64_t n)
{
	uint32_t h = FNV_OFFSET;

	for (uint64_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= FNV_PRIME;
	}
	return h;
}

void guest_main(uintptr_t bp)
{
	(void)bp;
	gprintf("microguest: hello\n");
	gprintf("cmdline: %s\n", bp_cmdline());

	unsigned n = bp_e820_count();
	gprintf("e820: %u entries\n", n);
	for (unsigned i = 0; i < n; i++) {
		struct e820_entry e = bp_e820(i);
		gprintf("e820: 0x%016lx 0x%016lx %u\n", (unsigned long)e.addr,
			(unsigned long)e.size, e.type);
	}

	uint64_t addr = bp_initrd_addr(), size = bp_initrd_size();
	if (size == 0)
		addr = 0;
	uint32_t h = fnv1a((const volatile uint8_t *)(uintptr_t)addr, size);
	gprintf("initrd: addr=0x%lx size=%lu fnv=0x%08x\n",
		(unsigned long)addr, (unsigned long)size, h);
}
