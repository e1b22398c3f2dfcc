/*
 * smp: counts the processors in the MP table, starts every AP with
 * INIT/SIPI/SIPI, and waits for all of them to check in.  Each CPU prints
 * "cpu <lapic id> up"; lines are serialized by gprintf's spinlock.
 */
#include "common.h"

#define MAX_CPUS	64	/* keep in sync with smp_tramp.S (MAX_APS + 1) */
#define AP_STACK_SIZE	8192	/* keep in sync with smp_tramp.S */
#define TRAMP_BASE	0x30000UL
#define SIPI_VECTOR	(TRAMP_BASE >> 12)

#define LAPIC_BASE	0xfee00000UL
#define LAPIC_ID	(LAPIC_BASE + 0x020)
#define LAPIC_SVR	(LAPIC_BASE + 0x0f0)
#define LAPIC_ICR_LO	(LAPIC_BASE + 0x300)
#define LAPIC_ICR_HI	(LAPIC_BASE + 0x310)
#define SVR_ENABLE	0x100
#define ICR_PENDING	(1u << 12)
#define ICR_INIT	0x500
#define ICR_STARTUP	0x600
#define ICR_ASSERT	(1u << 14)
#define ICR_LEVEL	(1u << 15)

/*
 * Delays in TSC ticks.  The TSC runs at >= ~1 GHz on anything we run on, so
 * these are at least the MP-spec waits; the AP timeout is ~5-20 s at 1-3 GHz,
 * generous for nested/emulated runs.
 */
#define DELAY_INIT	30000000ULL	/* ~10 ms */
#define DELAY_SIPI	600000ULL	/* ~200 us */
#define AP_TIMEOUT	15000000000ULL

extern const char ap_tramp_start[], ap_tramp_end[];
extern const char tramp_cr3[], tramp_stack_base[], tramp_ticket[];

static uint8_t ap_stacks[MAX_CPUS - 1][AP_STACK_SIZE] __attribute__((aligned(16)));

/* Identity map of [0, 4 GiB) with 2 MiB pages, for the APs' CR3. */
static uint64_t pml4[512] __attribute__((aligned(4096)));
static uint64_t pdpt[512] __attribute__((aligned(4096)));
static uint64_t pd[4][512] __attribute__((aligned(4096)));

static volatile uint32_t aps_up;
static uint8_t apic_ids[256];

static uint32_t lapic_id(void)
{
	return mmio_read32(LAPIC_ID) >> 24;
}

/* Called by the trampoline on each AP, in long mode on its own stack. */
NORETURN void ap_main(uint32_t ticket);

NORETURN void ap_main(uint32_t ticket)
{
	(void)ticket;
	gprintf("cpu %u up\n", lapic_id());
	__atomic_fetch_add(&aps_up, 1, __ATOMIC_RELEASE);
	halt_forever();
}

static uint8_t checksum(const volatile uint8_t *p, unsigned n)
{
	uint8_t s = 0;

	while (n--)
		s += *p++;
	return s;
}

/* Find the MP floating pointer ("_MP_", 16-byte aligned, valid checksum). */
static const volatile uint8_t *find_mpf(uint64_t start, uint64_t end)
{
	for (uint64_t a = start; a + 16 <= end; a += 16) {
		const volatile uint8_t *p = (const volatile uint8_t *)(uintptr_t)a;
		if (p[0] == '_' && p[1] == 'M' && p[2] == 'P' && p[3] == '_' &&
		    p[8] != 0 && checksum(p, 16u * p[8]) == 0)
			return p;
	}
	return 0;
}

/*
 * Collect the APIC IDs of the processor entries of the MP configuration
 * table into apic_ids[].  Returns the number of entries, or -1 if there is no
 * usable MP table.
 */
static int parse_mptable(void)
{
	const volatile uint8_t *mpf = find_mpf(0x9fc00, 0xa0000);

	if (!mpf)
		mpf = find_mpf(0xf0000, 0x100000);
	if (!mpf)
		return -1;
	uint32_t cfg = *(const volatile uint32_t *)(mpf + 4);
	if (!cfg)
		return -1;
	const volatile uint8_t *c = (const volatile uint8_t *)(uintptr_t)cfg;
	if (c[0] != 'P' || c[1] != 'C' || c[2] != 'M' || c[3] != 'P')
		return -1;
	uint16_t len = *(const volatile uint16_t *)(c + 4);
	uint16_t count = *(const volatile uint16_t *)(c + 0x22);
	const volatile uint8_t *e = c + 0x2c, *end = c + len;
	int n = 0;

	for (unsigned i = 0; i < count && e < end; i++) {
		switch (e[0]) {
		case 0: /* processor */
			if (n < (int)sizeof(apic_ids))
				apic_ids[n++] = e[1];
			e += 20;
			break;
		case 1: /* bus */
		case 2: /* I/O APIC */
		case 3: /* I/O interrupt assignment */
		case 4: /* local interrupt assignment */
			e += 8;
			break;
		default: /* unknown: cannot know its length */
			return n;
		}
	}
	return n;
}

static void icr_wait(void)
{
	for (unsigned i = 0; i < 1000000; i++) {
		if (!(mmio_read32(LAPIC_ICR_LO) & ICR_PENDING))
			return;
		cpu_relax();
	}
}

static void send_ipi(uint32_t apic_id, uint32_t lo)
{
	icr_wait();
	mmio_write32(LAPIC_ICR_HI, apic_id << 24);
	mmio_write32(LAPIC_ICR_LO, lo);	/* writing the low half sends */
	icr_wait();
}

static void start_ap(uint32_t apic_id)
{
	/* INIT assert, then de-assert (as Linux does). */
	send_ipi(apic_id, ICR_INIT | ICR_LEVEL | ICR_ASSERT);
	send_ipi(apic_id, ICR_INIT | ICR_LEVEL);
	tsc_delay(DELAY_INIT);
	for (int i = 0; i < 2; i++) {
		send_ipi(apic_id, ICR_STARTUP | SIPI_VECTOR);
		tsc_delay(DELAY_SIPI);
	}
}

static void setup_trampoline(void)
{
	/* Identity map [0, 4 GiB): P | RW | PS; the top 32 MiB (APICs) uncached. */
	for (unsigned g = 0; g < 4; g++) {
		for (unsigned i = 0; i < 512; i++) {
			uint64_t a = ((uint64_t)g << 30) | ((uint64_t)i << 21);
			pd[g][i] = a | 0x83 | (a >= 0xfe000000ULL ? 0x18 : 0);
		}
		pdpt[g] = (uintptr_t)pd[g] | 0x3;
	}
	pml4[0] = (uintptr_t)pdpt | 0x3;

	uint8_t *t = (uint8_t *)TRAMP_BASE;
	memcpy(t, ap_tramp_start, (size_t)(ap_tramp_end - ap_tramp_start));
	*(volatile uint32_t *)(t + (tramp_cr3 - ap_tramp_start)) =
		(uint32_t)(uintptr_t)pml4;
	*(volatile uint32_t *)(t + (tramp_stack_base - ap_tramp_start)) =
		(uint32_t)(uintptr_t)ap_stacks;
	*(volatile uint32_t *)(t + (tramp_ticket - ap_tramp_start)) = 0;
	__asm__ volatile("mfence" ::: "memory");
}

void guest_main(uintptr_t bp)
{
	(void)bp;
	int n = parse_mptable();

	if (n < 0) {
		gprintf("mptable: not found\n");
		n = 1;	/* just the BSP */
	} else {
		gprintf("mptable: %d cpus\n", n);
	}

	uint32_t self = lapic_id();
	gprintf("cpu %u up\n", self);

	if (n > 1) {
		setup_trampoline();
		/* Software-enable our LAPIC (spurious vector 0xff). */
		mmio_write32(LAPIC_SVR, SVR_ENABLE | 0xff);
		for (int i = 0; i < n; i++)
			if (apic_ids[i] != self)
				start_ap(apic_ids[i]);
	}

	uint32_t want = n > 0 ? (uint32_t)n - 1 : 0;
	uint64_t start = rdtsc();
	uint32_t up;

	/* Bounded by the TSC and, as a backstop, by an iteration count. */
	for (uint64_t spins = 0;; spins++) {
		up = __atomic_load_n(&aps_up, __ATOMIC_ACQUIRE);
		if (up >= want || rdtsc() - start > AP_TIMEOUT ||
		    spins > (1ULL << 36))
			break;
		cpu_relax();
	}

	if (up >= want)
		gprintf("smp: %d cpus up\n", n);
	else
		gprintf("smp: timeout, %u of %d cpus up\n", up + 1, n);
}
