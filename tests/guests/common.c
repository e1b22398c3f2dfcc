/* Shared code of the micro-guests; see common.h and README.md. */
#include "common.h"

const volatile uint8_t *boot_params;

NORETURN void guest_start(uintptr_t bp);

NORETURN void guest_start(uintptr_t bp)
{
	boot_params = (const volatile uint8_t *)bp;
	guest_main(bp);
	guest_done();
}

/* ------------------------------------------------------------------ CPU */

NORETURN void halt_forever(void)
{
	for (;;)
		__asm__ volatile("cli; hlt" ::: "memory");
}

NORETURN void guest_done(void)
{
	outb(DEBUG_PORT, DBG_DONE);
	outb(I8042_CMD_PORT, I8042_RESET);
	halt_forever();
}

void tsc_delay(uint64_t cycles)
{
	uint64_t start = rdtsc();

	while (rdtsc() - start < cycles)
		cpu_relax();
}

/* -------------------------------------------------------------- console */

static volatile uint32_t console_lock_word;

static void console_lock(void)
{
	/* xchg with a memory operand is implicitly locked. */
	while (__atomic_exchange_n(&console_lock_word, 1, __ATOMIC_ACQUIRE)) {
		while (__atomic_load_n(&console_lock_word, __ATOMIC_RELAXED))
			cpu_relax();
	}
}

static void console_unlock(void)
{
	__atomic_store_n(&console_lock_word, 0, __ATOMIC_RELEASE);
}

void serial_putc(char c)
{
	/* Bounded: an emulated UART reports THRE at once; never hang here. */
	for (unsigned i = 0; i < 1000000; i++) {
		if (inb(COM1_LSR) & LSR_THRE)
			break;
		cpu_relax();
	}
	outb(COM1_PORT, (uint8_t)c);
}

static void put_str(const char *s, int width)
{
	int len = (int)strlen(s);

	for (; width > len; width--)
		serial_putc(' ');
	while (*s)
		serial_putc(*s++);
}

static void put_uint(uint64_t v, unsigned base, int width, char pad,
		     int upper, int neg)
{
	const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
	char buf[24];
	int n = 0;

	do {
		buf[n++] = digits[v % base];
		v /= base;
	} while (v);
	if (neg && pad == '0')
		serial_putc('-');
	for (int w = n + neg; w < width; w++)
		serial_putc(pad);
	if (neg && pad != '0')
		serial_putc('-');
	while (n)
		serial_putc(buf[--n]);
}

void vgprintf(const char *fmt, va_list ap)
{
	console_lock();
	for (; *fmt; fmt++) {
		if (*fmt != '%') {
			serial_putc(*fmt);
			continue;
		}
		fmt++;
		char pad = ' ';
		int width = 0, lng = 0;
		if (*fmt == '0') {
			pad = '0';
			fmt++;
		}
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
		while (*fmt == 'l' || *fmt == 'z') {
			lng = 1;
			fmt++;
		}
		switch (*fmt) {
		case 'd':
		case 'i': {
			int64_t v = lng ? va_arg(ap, long) : va_arg(ap, int);
			uint64_t u = v < 0 ? -(uint64_t)v : (uint64_t)v;
			put_uint(u, 10, width, pad, 0, v < 0);
			break;
		}
		case 'u':
			put_uint(lng ? va_arg(ap, unsigned long)
				     : va_arg(ap, unsigned int),
				 10, width, pad, 0, 0);
			break;
		case 'x':
		case 'X':
			put_uint(lng ? va_arg(ap, unsigned long)
				     : va_arg(ap, unsigned int),
				 16, width, pad, *fmt == 'X', 0);
			break;
		case 'p':
			serial_putc('0');
			serial_putc('x');
			put_uint((uintptr_t)va_arg(ap, void *), 16, width, pad,
				 0, 0);
			break;
		case 's': {
			const char *s = va_arg(ap, const char *);
			put_str(s ? s : "(null)", width);
			break;
		}
		case 'c':
			serial_putc((char)va_arg(ap, int));
			break;
		case '%':
			serial_putc('%');
			break;
		case '\0':
			fmt--; /* trailing '%': stop at the NUL */
			break;
		default:
			serial_putc('%');
			serial_putc(*fmt);
			break;
		}
	}
	console_unlock();
}

void gprintf(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vgprintf(fmt, ap);
	va_end(ap);
}

/* ---------------------------------------------------------- boot_params */

uint8_t bp_u8(unsigned off)
{
	return boot_params[off];
}

uint32_t bp_u32(unsigned off)
{
	return *(const volatile uint32_t *)(boot_params + off);
}

const char *bp_cmdline(void)
{
	uint64_t p = bp_u32(BP_CMD_LINE_PTR) |
		     (uint64_t)bp_u32(BP_EXT_CMD_LINE_PTR) << 32;

	return p ? (const char *)(uintptr_t)p : "";
}

unsigned bp_e820_count(void)
{
	unsigned n = bp_u8(BP_E820_ENTRIES);

	return n > E820_MAX_ENTRIES ? E820_MAX_ENTRIES : n;
}

struct e820_entry bp_e820(unsigned i)
{
	struct e820_entry e;

	memcpy(&e, (const void *)(boot_params + BP_E820_TABLE + 20 * i),
	       sizeof(e));
	return e;
}

uint64_t bp_initrd_addr(void)
{
	return bp_u32(BP_RAMDISK_IMAGE) |
	       (uint64_t)bp_u32(BP_EXT_RAMDISK_IMAGE) << 32;
}

uint64_t bp_initrd_size(void)
{
	return bp_u32(BP_RAMDISK_SIZE) |
	       (uint64_t)bp_u32(BP_EXT_RAMDISK_SIZE) << 32;
}

uint64_t e820_ram_top(void)
{
	uint64_t top = 0;

	for (unsigned i = 0; i < bp_e820_count(); i++) {
		struct e820_entry e = bp_e820(i);
		if (e.type == E820_RAM && e.size && e.addr + e.size > top)
			top = e.addr + e.size;
	}
	return top;
}

int e820_is_ram(uint64_t addr, uint64_t len)
{
	for (unsigned i = 0; i < bp_e820_count(); i++) {
		struct e820_entry e = bp_e820(i);
		if (e.type == E820_RAM && addr >= e.addr &&
		    addr + len <= e.addr + e.size)
			return 1;
	}
	return 0;
}

/* -------------------------------------------------------------- strings */

/*
 * gcc may emit calls to these even with -ffreestanding.  The inline asm keeps
 * the optimizer from turning the loops back into calls to themselves.
 */
void *memset(void *d, int c, size_t n)
{
	void *ret = d;

	__asm__ volatile("rep stosb"
			 : "+D"(d), "+c"(n)
			 : "a"(c)
			 : "memory");
	return ret;
}

void *memcpy(void *d, const void *s, size_t n)
{
	void *ret = d;

	__asm__ volatile("rep movsb"
			 : "+D"(d), "+S"(s), "+c"(n)
			 :
			 : "memory");
	return ret;
}

void *memmove(void *d, const void *s, size_t n)
{
	unsigned char *dp = d;
	const unsigned char *sp = s;

	if (dp <= sp || dp >= sp + n)
		return memcpy(d, s, n);
	while (n--)
		dp[n] = sp[n];
	return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const unsigned char *x = a, *y = b;

	for (size_t i = 0; i < n; i++)
		if (x[i] != y[i])
			return x[i] - y[i];
	return 0;
}

size_t strlen(const char *s)
{
	size_t n = 0;

	while (s[n])
		n++;
	return n;
}

int cmdline_get_u64(const char *cmdline, const char *key, uint64_t *val)
{
	size_t klen = strlen(key);

	for (const char *p = cmdline; *p; p++) {
		if (p != cmdline && p[-1] != ' ')
			continue;
		if (memcmp(p, key, klen) != 0 || p[klen] != '=')
			continue;
		const char *q = p + klen + 1;
		if (*q < '0' || *q > '9')
			return 0;
		uint64_t v = 0;
		while (*q >= '0' && *q <= '9')
			v = v * 10 + (uint64_t)(*q++ - '0');
		*val = v;
		return 1;
	}
	return 0;
}
