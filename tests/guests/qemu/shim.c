/*
 * QEMU smoke-test shim, 64-bit part: turn PVH's hvm_start_info into a Linux
 * boot_params zero page at 0x7000 (e820, cmdline at 0x20000, initrd), and
 * write an MP table at 0x9fc00 listing fw_cfg's CPU count, as the VMM does
 * (SeaBIOS's own MP table lists only the BSP when booted this way).
 */
#include <stdint.h>

struct hvm_start_info {
	uint32_t magic, version, flags, nr_modules;
	uint64_t modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
	uint32_t memmap_entries, reserved;
};
struct hvm_modlist_entry {
	uint64_t paddr, size, cmdline_paddr, reserved;
};
struct hvm_memmap_entry {
	uint64_t addr, size;
	uint32_t type, reserved;
};

#define BP ((volatile uint8_t *)0x7000)
#define CMDLINE ((volatile char *)0x20000)

static char cmdline[4096];
static struct hvm_memmap_entry map[128];

static inline void outw(uint16_t port, uint16_t v)
{
	__asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port));
}
static inline uint8_t inb(uint16_t port)
{
	uint8_t v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static unsigned fwcfg_nb_cpus(void)
{
	outw(0x510, 0x05);	/* FW_CFG_NB_CPUS, u16 little endian */
	unsigned lo = inb(0x511), hi = inb(0x511);
	unsigned n = lo | hi << 8;
	return n ? n : 1;
}

static uint8_t csum(volatile uint8_t *p, unsigned n)
{
	uint8_t s = 0;
	while (n--)
		s += *p++;
	return s;
}

static void write_mptable(unsigned ncpu)
{
	volatile uint8_t *mpf = (volatile uint8_t *)0x9fc00;
	volatile uint8_t *cfg = mpf + 16;
	unsigned len = 0x2c + 20 * ncpu;

	for (unsigned i = 0; i < 16 + len; i++)
		mpf[i] = 0;
	mpf[0] = '_'; mpf[1] = 'M'; mpf[2] = 'P'; mpf[3] = '_';
	*(volatile uint32_t *)(mpf + 4) = 0x9fc10;
	mpf[8] = 1;	/* length in 16-byte units */
	mpf[9] = 4;	/* spec rev 1.4 */
	mpf[10] = -csum(mpf, 16);

	cfg[0] = 'P'; cfg[1] = 'C'; cfg[2] = 'M'; cfg[3] = 'P';
	*(volatile uint16_t *)(cfg + 4) = len;
	cfg[6] = 4;
	*(volatile uint16_t *)(cfg + 0x22) = ncpu;
	*(volatile uint32_t *)(cfg + 0x24) = 0xfee00000;
	for (unsigned i = 0; i < ncpu; i++) {
		volatile uint8_t *e = cfg + 0x2c + 20 * i;
		e[0] = 0;
		e[1] = i;
		e[2] = 0x14;
		e[3] = 1 | (i == 0 ? 2 : 0);	/* enabled, BSP */
	}
	cfg[7] = -csum(cfg, len);
}

static void put32(unsigned off, uint32_t v) { *(volatile uint32_t *)(BP + off) = v; }
static void put64(unsigned off, uint64_t v) { *(volatile uint64_t *)(BP + off) = v; }

void shim_main(uint32_t si_addr);

void shim_main(uint32_t si_addr)
{
	const struct hvm_start_info *si = (const void *)(uintptr_t)si_addr;
	uint64_t rd_addr = 0, rd_size = 0;
	unsigned n = 0;

	/* Copy everything out first: start_info may live where we write. */
	if (si->cmdline_paddr) {
		const char *c = (const char *)(uintptr_t)si->cmdline_paddr;
		for (unsigned i = 0; i < sizeof(cmdline) - 1 && c[i]; i++)
			cmdline[i] = c[i];
	}
	if (si->version >= 1 && si->memmap_paddr) {
		const struct hvm_memmap_entry *m = (const void *)(uintptr_t)si->memmap_paddr;
		for (; n < si->memmap_entries && n < 128; n++)
			map[n] = m[n];
	}
	if (si->nr_modules && si->modlist_paddr) {
		const struct hvm_modlist_entry *m = (const void *)(uintptr_t)si->modlist_paddr;
		rd_addr = m->paddr;
		rd_size = m->size;
	}

	for (unsigned i = 0; i < 4096; i++)
		BP[i] = 0;
	for (unsigned i = 0; i < sizeof(cmdline); i++)
		CMDLINE[i] = cmdline[i];
	put32(0x228, 0x20000);
	put32(0x0c8, 0);
	put32(0x218, (uint32_t)rd_addr);
	put32(0x0c0, (uint32_t)(rd_addr >> 32));
	put32(0x21c, (uint32_t)rd_size);
	put32(0x0c4, (uint32_t)(rd_size >> 32));
	write_mptable(fwcfg_nb_cpus());
	BP[0x1e8] = (uint8_t)n;
	for (unsigned i = 0; i < n; i++) {
		put64(0x2d0 + 20 * i, map[i].addr);
		put64(0x2d0 + 20 * i + 8, map[i].size);
		put32(0x2d0 + 20 * i + 16, map[i].type);
	}
}
