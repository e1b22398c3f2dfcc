/*
 * hstate: a hostile driver for the virtio-mmio state machine (issue 11,
 * defects 1 and 2). On every device it finds it
 *   - clears DRIVER_OK without a reset, grows the queue to 256 and posts a
 *     buffer (the live resize that made walkChain panic);
 *   - runs `loops=` tight sessions of activate, clear DRIVER_OK, set it
 *     again, post, reset (the second activation that leaked a goroutine);
 *   - writes the four status bits in all 24 orders, with the queue
 *     registers and garbage in every other register written after each
 *     step, posting and notifying each time;
 * checking that a driver error shows NEEDS_RESET and that a reset always
 * returns status 0 and QueueReady 0. Lines (one per device and check):
 *   hstate: slot <i> id <id> <check> ok|BAD <detail>
 *   hstate: done <bad count>
 * then done + reset.
 */
#include "vio.h"

static uint8_t buf[4096] __attribute__((aligned(4096)));
static unsigned bad;

static void check(unsigned slot, uint32_t id, const char *what, int ok, uint32_t detail)
{
	if (ok) {
		gprintf("hstate: slot %u id %u %s ok\n", slot, id, what);
	} else {
		bad++;
		gprintf("hstate: slot %u id %u %s BAD 0x%x\n", slot, id, what, detail);
	}
}

static int reset_ok(uint64_t base)
{
	vio_set_status(base, 0);
	vio_wr(base, VR_QUEUE_SEL, 0);
	return vio_status(base) == 0 && vio_rd(base, VR_QUEUE_READY) == 0;
}

/* Every queue set up with `size` entries. */
static void setup_queues(struct vq *vqs, uint64_t base, unsigned nq, uint16_t size)
{
	for (unsigned q = 0; q < nq && q < 8; q++)
		vio_queue(&vqs[q], base, q, size, q);
}

static void post_all(struct vq *vqs, unsigned nq)
{
	for (unsigned q = 0; q < nq && q < 8; q++)
		vio_post(&vqs[q], (uint64_t)(uintptr_t)buf, 64, (q % 2) ? 0 : VD_WRITE, 1);
}

static const uint32_t garbage_regs[] = {
	VR_DEV_FEAT_SEL, VR_DRV_FEAT_SEL, VR_DRV_FEAT, VR_QUEUE_SEL, VR_QUEUE_NUM, VR_QUEUE_READY,
	VR_DESC_LO, VR_DESC_HI, VR_AVAIL_LO, VR_AVAIL_HI, VR_USED_LO, VR_USED_HI, VR_INT_ACK,
	0x0fc, 0x100, 0x104,
};

static void attack(unsigned slot, uint64_t base, uint64_t loops)
{
	uint32_t id = vio_rd(base, VR_DEVICE_ID);
	unsigned nq = vio_num_queues(base);
	struct vq vqs[8];
	uint32_t st;

	/* 1: live resize. */
	vio_negotiate(base, 0);
	setup_queues(vqs, base, nq, 16);
	vio_set_status(base, VS_ACK | VS_DRIVER | VS_FEATURES_OK | VS_DRIVER_OK);
	vio_set_status(base, VS_ACK | VS_DRIVER | VS_FEATURES_OK);
	for (unsigned q = 0; q < nq && q < 8; q++) {
		vio_wr(base, VR_QUEUE_SEL, q);
		vio_wr(base, VR_QUEUE_NUM, 256);
		vqs[q].size = 256;
	}
	post_all(vqs, nq);
	st = vio_status(base);
	check(slot, id, "resize-needs-reset", (st & VS_NEEDS_RESET) != 0, st);
	vio_set_status(base, VS_ACK | VS_DRIVER | VS_FEATURES_OK | VS_DRIVER_OK);
	post_all(vqs, nq);
	tsc_delay(1000000);
	check(slot, id, "resize-reset", reset_ok(base), vio_status(base));

	/* 2: repeated activation, as fast as the guest can. */
	int all = 1;
	for (uint64_t i = 0; i < loops; i++) {
		vio_negotiate(base, 0);
		setup_queues(vqs, base, nq, 16);
		vio_set_status(base, VS_ACK | VS_DRIVER | VS_FEATURES_OK | VS_DRIVER_OK);
		post_all(vqs, nq);
		vio_set_status(base, VS_ACK | VS_DRIVER | VS_FEATURES_OK);
		vio_set_status(base, VS_ACK | VS_DRIVER | VS_FEATURES_OK | VS_DRIVER_OK);
		post_all(vqs, nq);
		st = vio_status(base);
		if (!(st & VS_NEEDS_RESET) || !reset_ok(base)) {
			all = 0;
			break;
		}
	}
	check(slot, id, "reactivate", all, st);

	/* 3: the status bits in every order, registers written in each state. */
	static const uint32_t bits[4] = { VS_ACK, VS_DRIVER, VS_FEATURES_OK, VS_DRIVER_OK };
	all = 1;
	for (unsigned a = 0; a < 4; a++)
		for (unsigned b = 0; b < 4; b++)
			for (unsigned c = 0; c < 4; c++) {
				unsigned d = 6 - a - b - c;

				if (a == b || a == c || b == c || d > 3 || d == a || d == b || d == c)
					continue;
				unsigned order[4] = { a, b, c, d };
				uint32_t s = 0;

				vio_set_status(base, 0);
				vio_wr(base, VR_DRV_FEAT_SEL, 1);
				vio_wr(base, VR_DRV_FEAT, 1);
				for (unsigned k = 0; k < 4; k++) {
					s |= bits[order[k]];
					vio_set_status(base, s);
					setup_queues(vqs, base, nq, 16);
					post_all(vqs, nq);
					for (unsigned r = 0; r < sizeof(garbage_regs) / sizeof(garbage_regs[0]); r++)
						vio_wr(base, garbage_regs[r], 0xdead0000u + 16 * r);
					post_all(vqs, nq);
				}
				if (!reset_ok(base))
					all = 0;
			}
	check(slot, id, "orders", all, 0);
	vio_set_status(base, 0);
}

void guest_main(uintptr_t bp)
{
	(void)bp;
	uint64_t loops = 300;

	cmdline_get_u64(bp_cmdline(), "loops", &loops);
	for (unsigned i = 0; i < VIO_SLOTS; i++) {
		uint64_t base = vio_slot(i);

		if (base)
			attack(i, base, loops);
	}
	gprintf("hstate: done %u\n", bad);
	guest_done();
}
