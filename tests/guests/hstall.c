/*
 * hstall: floods the console forever, so that a VMM whose stdout nobody
 * reads has its console writes stall (issue 11, defect 6): `--timeout`
 * must still end it on time. `via=serial` (default) writes COM1 with
 * `rep outsb`,
 * `via=hvc` writes 4 KiB buffers to hvc0 (the virtio console without
 * MULTIPORT). Prints "hstall: start" first.
 */
#include "vio.h"

#define CON_F_MULTIPORT	(1u << 1)

static uint8_t buf[4096] __attribute__((aligned(4096)));

static void hvc(void)
{
	for (unsigned i = 0; i < VIO_SLOTS; i++) {
		uint64_t base = vio_slot(i);
		struct vq tx;

		if (!base || vio_rd(base, VR_DEVICE_ID) != VID_CONSOLE)
			continue;
		vio_wr(base, VR_DEV_FEAT_SEL, 0);
		if (vio_rd(base, VR_DEV_FEAT) & CON_F_MULTIPORT)
			continue;
		vio_negotiate(base, 0);
		vio_queue(&tx, base, 1, 128, 0);
		vio_set_status(base, VS_ACK | VS_DRIVER | VS_FEATURES_OK | VS_DRIVER_OK);
		for (;;) {
			while ((uint16_t)(tx.next_avail - vio_used_idx(&tx)) < tx.size)
				vio_post(&tx, (uint64_t)(uintptr_t)buf, sizeof(buf), 0, 1);
			cpu_relax();
		}
	}
	gprintf("hstall: no hvc0\n");
}

void guest_main(uintptr_t bp)
{
	(void)bp;
	const char *cl = bp_cmdline();

	memset(buf, 'x', sizeof(buf));
	buf[sizeof(buf) - 1] = '\n';
	gprintf("hstall: start\n");
	for (const char *p = cl; *p; p++)
		if ((p == cl || p[-1] == ' ') && memcmp(p, "via=hvc", 7) == 0)
			hvc();
	/* rep outsb: a page of bytes per I/O exit, so the flood outruns any
	 * pipe (one outb per byte would take minutes to fill one). */
	for (;;) {
		const void *src = buf;
		uint64_t n = sizeof(buf);

		__asm__ volatile("rep outsb" : "+S"(src), "+c"(n) : "d"((uint16_t)COM1_PORT) : "memory");
	}
}
