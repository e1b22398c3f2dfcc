/*
 * acpi: reads the ACPI tables the VMM wrote the way an OS does (ACPI 6.5):
 * the RSDP from boot_params.acpi_rsdp_addr (0x070), else the legacy scan of
 * 0xe0000-0xfffff (5.2.5.1); the XSDT; the FADT's flags and its sleep
 * control and reset registers. It checks every checksum, then writes
 * garbage to the registers and finally ends the machine through them:
 * `end=s5` (default) writes SLP_TYP=5|SLP_EN to the sleep control register,
 * `end=reset` the reset value to the reset register. Without an RSDP it
 * says so and does the usual done + i8042 reset. `garbage=N` (default
 * 1000) is how many garbage writes of each kind.
 */
#include "common.h"

#define BP_ACPI_RSDP_ADDR 0x070

static uint8_t sum8(const volatile uint8_t *p, uint32_t n)
{
	uint8_t s = 0;

	for (uint32_t i = 0; i < n; i++)
		s += p[i];
	return s;
}

static uint64_t rd64(const volatile uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint32_t rd32(const volatile uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static const volatile uint8_t *find_rsdp(const char **how)
{
	uint64_t a = rd64(boot_params + BP_ACPI_RSDP_ADDR);

	if (a) {
		*how = "boot_params";
		return (const volatile uint8_t *)(uintptr_t)a;
	}
	for (uint64_t p = 0xe0000; p < 0x100000; p += 16) {
		const volatile uint8_t *r = (const volatile uint8_t *)(uintptr_t)p;
		if (memcmp((const void *)r, "RSD PTR ", 8) == 0 && sum8(r, 20) == 0) {
			*how = "scan";
			return r;
		}
	}
	return 0;
}

/* A table whose length is sane and whose bytes sum to 0, or NULL. */
static const volatile uint8_t *table(uint64_t addr, const char *sig)
{
	const volatile uint8_t *t = (const volatile uint8_t *)(uintptr_t)addr;
	uint32_t len;

	if (addr < 0x1000 || addr >= 0x100000 || memcmp((const void *)t, sig, 4) != 0) {
		gprintf("acpi: %s: not found at 0x%lx\n", sig, (unsigned long)addr);
		return 0;
	}
	len = rd32(t + 4);
	if (len < 36 || addr + len > 0x100000 || sum8(t, len) != 0) {
		gprintf("acpi: %s: bad length %u or checksum\n", sig, len);
		return 0;
	}
	gprintf("acpi: %s ok, %u bytes\n", sig, len);
	return t;
}

void guest_main(uintptr_t bp)
{
	const char *cl = bp_cmdline(), *how = "";
	uint64_t garbage = 1000;
	int reset = 0;

	(void)bp;
	cmdline_get_u64(cl, "garbage", &garbage);
	for (const char *p = cl; *p; p++)
		if (memcmp(p, "end=reset", 9) == 0)
			reset = 1;

	const volatile uint8_t *rsdp = find_rsdp(&how);
	if (!rsdp) {
		gprintf("acpi: no RSDP\n");
		return; /* done + i8042 reset */
	}
	if (sum8(rsdp, 20) != 0 || rsdp[15] < 2 || sum8(rsdp, 36) != 0) {
		gprintf("acpi: RSDP: bad checksum or revision %u\n", rsdp[15]);
		return;
	}
	gprintf("acpi: RSDP ok (%s)\n", how);
	const volatile uint8_t *xsdt = table(rd64(rsdp + 24), "XSDT");
	if (!xsdt)
		return;
	const volatile uint8_t *fadt = 0;
	for (uint32_t off = 36; off + 8 <= rd32(xsdt + 4); off += 8) {
		uint64_t a = rd64(xsdt + off);
		const volatile uint8_t *t = (const volatile uint8_t *)(uintptr_t)a;
		if (a >= 0x1000 && a < 0x100000 && memcmp((const void *)t, "FACP", 4) == 0)
			fadt = table(a, "FACP");
		else if (a >= 0x1000 && a < 0x100000 && memcmp((const void *)t, "APIC", 4) == 0)
			table(a, "APIC");
	}
	if (!fadt || !table(rd64(fadt + 140), "DSDT"))
		return;
	uint32_t flags = rd32(fadt + 112);
	uint16_t slp = (uint16_t)rd64(fadt + 244 + 4), rst = (uint16_t)rd64(fadt + 116 + 4);
	uint8_t rval = fadt[128];
	gprintf("acpi: hw_reduced=%u reset_reg=%u sleep_control=0x%x reset=0x%x value=0x%x\n",
		(flags >> 20) & 1, (flags >> 10) & 1, slp, rst, rval);

	/* Garbage: every other sleep type with SLP_EN, reserved bits, wide
	 * accesses, wrong reset values; none may end the machine. */
	for (uint64_t i = 0; i < garbage; i++) {
		outb(slp, (uint8_t)((i % 8 == 5 ? 4 : i % 8) << 2 | 0x20));
		outb(slp, 0xc1);
		outb(slp + 1, 0x7f);
		outl(slp, 0xffffffff);
		outb(rst, (uint8_t)(rval + 1 + i % 254));
		outb(slp + 3, 0xff);
		(void)inb(slp + 1);
	}
	gprintf("acpi: garbage survived\n");
	if (reset) {
		outb(rst, rval);
	} else {
		outb(slp + 1, 0x80); /* clear WAK_STS, as Linux does first */
		outb(slp, 5 << 2 | 0x20);
	}
	gprintf("acpi: still running after the %s write\n", reset ? "reset" : "S5");
	halt_forever();
}
