/*
 * hgrow: a hostile driver that talks to the VMM as fast as it can, to make
 * it grow (issue 11, defects 3, 4 and 5). `mode=` on the command line picks
 * the attack; `count=` how many messages or rounds (default 200000):
 *   ctrl        PORT_READY control messages to the multiport console, with
 *               no control receive queue (replies cannot be delivered)
 *   agent       "ready" lines on the agent port, whose replies it never reads
 *   junk        malformed agent lines (each one a VMM warning)
 *   breakreset  break the rng's queue (a descriptor outside RAM), wait for
 *               NEEDS_RESET, reset, repeat
 *   queues      post buffers on every queue of every device, rounds of a
 *               full ring each
 * Lines: "hgrow: <mode> start", "hgrow: <mode> done <n>" (n: messages or
 * rounds the device had taken when the guest stopped waiting for it), then
 * done + reset.
 */
#include "vio.h"

#define CON_F_MULTIPORT	(1u << 1)
#define WAIT		20000000000ULL	/* TSC ticks: several seconds */

static uint8_t buf[64 * 1024] __attribute__((aligned(4096)));

static int cmdline_is(const char *cl, const char *kv)
{
	size_t n = strlen(kv);

	for (const char *p = cl; *p; p++)
		if ((p == cl || p[-1] == ' ') && memcmp(p, kv, n) == 0 && (p[n] == ' ' || p[n] == 0))
			return 1;
	return 0;
}

/* The slot of the first device with this ID whose MULTIPORT offer is `mp`. */
static uint64_t find(uint32_t id, int mp)
{
	for (unsigned i = 0; i < VIO_SLOTS; i++) {
		uint64_t base = vio_slot(i);

		if (!base || vio_rd(base, VR_DEVICE_ID) != id)
			continue;
		vio_wr(base, VR_DEV_FEAT_SEL, 0);
		if (mp < 0 || !!(vio_rd(base, VR_DEV_FEAT) & CON_F_MULTIPORT) == mp)
			return base;
	}
	return 0;
}

/* Post `len` readable bytes of buf on vq `count` times, a ring at a time. */
static uint64_t flood(struct vq *vq, uint32_t len, uint16_t flags, uint64_t count)
{
	uint64_t n = 0;

	while (n < count) {
		unsigned k;

		for (k = 0; k < vq->size && n + k < count; k++)
			vio_post(vq, (uint64_t)(uintptr_t)buf, len, flags, 0);
		vio_wr(vq->base, VR_QUEUE_NOTIFY, vq->idx);
		if (!vio_wait(vq, WAIT))
			break;
		n += k;
	}
	return n;
}

static uint64_t attack_ctrl(uint64_t count)
{
	uint64_t base = find(VID_CONSOLE, 1);
	struct vq tx;

	if (!base)
		return 0;
	vio_negotiate(base, CON_F_MULTIPORT);
	vio_queue(&tx, base, 3, 128, 0);	/* control transmit only: no receive queue */
	vio_set_status(base, VS_ACK | VS_DRIVER | VS_FEATURES_OK | VS_DRIVER_OK);
	/* struct virtio_console_control { le32 id; le16 event; le16 value; }: PORT_READY(0) = 1 */
	memset(buf, 0, 8);
	buf[4] = 3;
	buf[6] = 1;
	return flood(&tx, 8, 0, count);
}

static uint64_t attack_agent(uint64_t count, const char *line)
{
	uint64_t base = find(VID_CONSOLE, 1);
	size_t n = strlen(line), per = sizeof(buf) / n;
	struct vq tx;

	if (!base)
		return 0;
	for (size_t i = 0; i < per; i++)
		memcpy(buf + i * n, line, n);
	vio_negotiate(base, CON_F_MULTIPORT);
	vio_queue(&tx, base, 1, 128, 0);	/* the agent port (port 0) transmit; its receive queue is never set up */
	vio_set_status(base, VS_ACK | VS_DRIVER | VS_FEATURES_OK | VS_DRIVER_OK);
	return flood(&tx, per * n, 0, (count + per - 1) / per) * per;
}

static uint64_t attack_breakreset(uint64_t count)
{
	uint64_t base = find(VID_RNG, -1), n;
	struct vq vq;

	if (!base)
		return 0;
	for (n = 0; n < count; n++) {
		vio_negotiate(base, 0);
		vio_queue(&vq, base, 0, 16, 0);
		vio_set_status(base, VS_ACK | VS_DRIVER | VS_FEATURES_OK | VS_DRIVER_OK);
		vio_post(&vq, 0xfff0000000ULL, 64, VD_WRITE, 1);	/* far outside RAM */
		uint64_t start = rdtsc();

		while (!(vio_status(base) & VS_NEEDS_RESET))
			if (rdtsc() - start > WAIT)
				return n;
		vio_set_status(base, 0);
	}
	return n;
}

static uint64_t attack_queues(uint64_t count)
{
	struct vq vqs[8];
	uint64_t total = 0;

	for (unsigned i = 0; i < VIO_SLOTS; i++) {
		uint64_t base = vio_slot(i);

		if (!base)
			continue;
		unsigned nq = vio_num_queues(base);

		if (nq > 8)
			nq = 8;
		vio_negotiate(base, 0);
		for (unsigned q = 0; q < nq; q++)
			vio_queue(&vqs[q], base, q, 128, q);
		vio_set_status(base, VS_ACK | VS_DRIVER | VS_FEATURES_OK | VS_DRIVER_OK);
		for (unsigned q = 0; q < nq; q++) {
			/* Writable buffers for receive queues (even), readable for transmit. */
			uint64_t n = flood(&vqs[q], 4096, (q % 2) ? 0 : VD_WRITE, count / 8);

			gprintf("hgrow: queues slot %u queue %u took %u\n", i, q, (unsigned)n);
			total += n;
		}
		vio_set_status(base, 0);
	}
	return total;
}

static uint64_t attack_ready(uint64_t count) { return attack_agent(count, "{\"t\":\"ready\"}\n"); }
static uint64_t attack_junk(uint64_t count) { return attack_agent(count, "junk\n"); }

static const struct {
	const char *mode;
	uint64_t (*run)(uint64_t count);
} attacks[] = {
	{ "ctrl", attack_ctrl },
	{ "agent", attack_ready },
	{ "junk", attack_junk },
	{ "breakreset", attack_breakreset },
	{ "queues", attack_queues },
};

void guest_main(uintptr_t bp)
{
	(void)bp;
	const char *cl = bp_cmdline();
	uint64_t count = 200000, n = 0;
	const char *mode = "none";
	char kv[32];

	cmdline_get_u64(cl, "count", &count);
	for (unsigned i = 0; i < sizeof(attacks) / sizeof(attacks[0]); i++) {
		memcpy(kv, "mode=", 5);
		memcpy(kv + 5, attacks[i].mode, strlen(attacks[i].mode) + 1);
		if (!cmdline_is(cl, kv))
			continue;
		mode = attacks[i].mode;
		gprintf("hgrow: %s start\n", mode);
		n = attacks[i].run(count);
	}
	gprintf("hgrow: %s done %u\n", mode, (unsigned)n);
	guest_done();
}
