#include "vio.h"

/* Rings go in the guest-free area 0x30000-0x9efff: 12 KiB per queue holds a
 * 256-entry descriptor table (4 KiB), available ring and used ring. */
#define RING_AREA	0x30000ULL
#define RING_STRIDE	0x3000ULL

uint64_t vio_slot(unsigned i)
{
	uint64_t base = VIO_BASE + i * VIO_SLOT;

	if (i >= VIO_SLOTS || vio_rd(base, VR_MAGIC) != VIO_MAGIC || vio_rd(base, VR_DEVICE_ID) == 0)
		return 0;
	return base;
}

unsigned vio_num_queues(uint64_t base)
{
	unsigned n = 0;

	for (;; n++) {
		vio_wr(base, VR_QUEUE_SEL, n);
		if (vio_rd(base, VR_QUEUE_NUM_MAX) == 0)
			return n;
	}
}

uint32_t vio_negotiate(uint64_t base, uint32_t features_lo)
{
	vio_set_status(base, 0);
	vio_set_status(base, VS_ACK);
	vio_set_status(base, VS_ACK | VS_DRIVER);
	vio_wr(base, VR_DRV_FEAT_SEL, 0);
	vio_wr(base, VR_DRV_FEAT, features_lo);
	vio_wr(base, VR_DRV_FEAT_SEL, 1);
	vio_wr(base, VR_DRV_FEAT, 1);	/* VIRTIO_F_VERSION_1 */
	vio_set_status(base, VS_ACK | VS_DRIVER | VS_FEATURES_OK);
	return vio_status(base);
}

void vio_queue(struct vq *vq, uint64_t base, unsigned q, uint16_t size, unsigned ring_slot)
{
	uint64_t at = RING_AREA + ring_slot * RING_STRIDE;

	vq->base = base;
	vq->idx = q;
	vq->size = size;
	vq->desc = (volatile uint8_t *)(uintptr_t)at;
	vq->avail = (volatile uint8_t *)(uintptr_t)(at + 0x1000);
	vq->used = (volatile uint8_t *)(uintptr_t)(at + 0x2000);
	vq->next_avail = 0;
	memset((void *)(uintptr_t)at, 0, RING_STRIDE);
	vio_wr(base, VR_QUEUE_SEL, q);
	vio_wr(base, VR_QUEUE_NUM, size);
	vio_wr(base, VR_DESC_LO, (uint32_t)at);
	vio_wr(base, VR_DESC_HI, 0);
	vio_wr(base, VR_AVAIL_LO, (uint32_t)(at + 0x1000));
	vio_wr(base, VR_AVAIL_HI, 0);
	vio_wr(base, VR_USED_LO, (uint32_t)(at + 0x2000));
	vio_wr(base, VR_USED_HI, 0);
	vio_wr(base, VR_QUEUE_READY, 1);
}

void vio_post(struct vq *vq, uint64_t buf, uint32_t len, uint16_t flags, int notify)
{
	uint16_t slot = vq->next_avail % vq->size;
	volatile uint8_t *d = vq->desc + 16 * slot;

	*(volatile uint64_t *)d = buf;
	*(volatile uint32_t *)(d + 8) = len;
	*(volatile uint16_t *)(d + 12) = flags;
	*(volatile uint16_t *)(d + 14) = 0;
	*(volatile uint16_t *)(vq->avail + 4 + 2 * slot) = slot;
	__asm__ volatile("" ::: "memory");
	vq->next_avail++;
	*(volatile uint16_t *)(vq->avail + 2) = vq->next_avail;
	if (notify)
		vio_wr(vq->base, VR_QUEUE_NOTIFY, vq->idx);
}

uint16_t vio_used_idx(const struct vq *vq)
{
	return *(volatile uint16_t *)(vq->used + 2);
}

int vio_wait(const struct vq *vq, uint64_t cycles)
{
	uint64_t start = rdtsc();

	while (vio_used_idx(vq) != vq->next_avail) {
		if (rdtsc() - start > cycles)
			return 0;
		cpu_relax();
	}
	return 1;
}
