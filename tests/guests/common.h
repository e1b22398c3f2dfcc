/*
 * Shared support for the micro-guests: port I/O, COM1 output, a tiny printf,
 * boot_params ("zero page") accessors, delays and the "done + reset" exit.
 * See README.md for the contract with the VMM.
 */
#ifndef MICROGUEST_COMMON_H
#define MICROGUEST_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define NORETURN __attribute__((noreturn))
#define PRINTF(a, b) __attribute__((format(printf, a, b)))

/* I/O ports and magic values. */
#define COM1_PORT	0x3f8
#define COM1_LSR	(COM1_PORT + 5)
#define LSR_THRE	0x20
#define I8042_CMD_PORT	0x64
#define I8042_RESET	0xfe
#define DEBUG_PORT	0x3f0
#define DEBUG_NOP_PORT	0x3f4	/* no-op register used by the PIO benchmark */
#define DBG_DONE	0x10	/* "micro-guest done", written right before reset */
#define DBG_PIO_START	0x11
#define DBG_PIO_END	0x12

/* struct boot_params offsets (Documentation/arch/x86/zero-page.rst). */
#define BP_EXT_RAMDISK_IMAGE	0x0c0
#define BP_EXT_RAMDISK_SIZE	0x0c4
#define BP_EXT_CMD_LINE_PTR	0x0c8
#define BP_E820_ENTRIES		0x1e8	/* u8 */
#define BP_RAMDISK_IMAGE	0x218
#define BP_RAMDISK_SIZE		0x21c
#define BP_CMD_LINE_PTR		0x228
#define BP_E820_TABLE		0x2d0
#define E820_MAX_ENTRIES	128
#define E820_RAM		1

#define GiB (1ULL << 30)
#define MiB (1ULL << 20)

struct e820_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
} __attribute__((packed));

/* ---- port I/O and CPU helpers ---- */
static inline void outb(uint16_t port, uint8_t v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}
static inline void outl(uint16_t port, uint32_t v)
{
	__asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}
static inline uint8_t inb(uint16_t port)
{
	uint8_t v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}
static inline void cpu_relax(void)
{
	__asm__ volatile("pause" ::: "memory");
}
static inline uint64_t rdtsc(void)
{
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}
static inline uint32_t mmio_read32(uint64_t addr)
{
	return *(volatile uint32_t *)(uintptr_t)addr;
}
static inline void mmio_write32(uint64_t addr, uint32_t v)
{
	*(volatile uint32_t *)(uintptr_t)addr = v;
}

/* cli; hlt forever. */
NORETURN void halt_forever(void);
/* Debug port 0x10, then i8042 reset, then halt_forever(). */
NORETURN void guest_done(void);
/* Busy-wait for about `cycles` TSC ticks (pause loop). */
void tsc_delay(uint64_t cycles);

/* ---- console (COM1) ---- */
void serial_putc(char c);
/*
 * printf subset: %s %c %d %i %u %x %X %p %%, flags '0' and width, length
 * modifiers l/ll/z.  One call is emitted atomically with respect to other
 * CPUs (a spinlock is held for the whole call), so print whole lines.
 */
void gprintf(const char *fmt, ...) PRINTF(1, 2);
void vgprintf(const char *fmt, va_list ap);

/* ---- boot_params ---- */
/* Set by the entry path before guest_main() runs. */
extern const volatile uint8_t *boot_params;
uint8_t bp_u8(unsigned off);
uint32_t bp_u32(unsigned off);
/* The NUL-terminated command line, or "" when cmd_line_ptr is 0. */
const char *bp_cmdline(void);
/* Number of e820 entries (clamped to 128) and entry i. */
unsigned bp_e820_count(void);
struct e820_entry bp_e820(unsigned i);
/* Initrd physical address / size (64-bit, ext_* included). */
uint64_t bp_initrd_addr(void);
uint64_t bp_initrd_size(void);
/* Highest end address of an e820 RAM region (0 if none). */
uint64_t e820_ram_top(void);
/* True if [addr, addr+len) lies entirely inside one e820 RAM region. */
int e820_is_ram(uint64_t addr, uint64_t len);

/* ---- strings ---- */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
void *memmove(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
/*
 * Find "key=" as a whole word (start of string or after a space) in the
 * command line and parse the decimal value after it.  Returns 1 and sets *val
 * on success, 0 if absent or not followed by a digit.
 */
int cmdline_get_u64(const char *cmdline, const char *key, uint64_t *val);

/* Each guest provides this; `bp` is the boot_params physical address. */
void guest_main(uintptr_t bp);

#endif
