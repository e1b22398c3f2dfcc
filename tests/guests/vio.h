/*
 * A minimal virtio-mmio driver for the hostile micro-guests (virtio 1.2,
 * sections 2.1, 2.7 and 4.2.2): find devices, drive the status register in
 * any order, set up split queues and post descriptor chains. It polls the
 * used ring (the guests run with interrupts off).
 */
#ifndef MICROGUEST_VIO_H
#define MICROGUEST_VIO_H

#include "common.h"

#define VIO_BASE	0xd0000000ULL
#define VIO_SLOT	0x1000ULL
#define VIO_SLOTS	16
#define VIO_MAGIC	0x74726976

/* Registers (spec 4.2.2). */
#define VR_MAGIC	0x000
#define VR_DEVICE_ID	0x008
#define VR_DEV_FEAT	0x010
#define VR_DEV_FEAT_SEL	0x014
#define VR_DRV_FEAT	0x020
#define VR_DRV_FEAT_SEL	0x024
#define VR_QUEUE_SEL	0x030
#define VR_QUEUE_NUM_MAX 0x034
#define VR_QUEUE_NUM	0x038
#define VR_QUEUE_READY	0x044
#define VR_QUEUE_NOTIFY	0x050
#define VR_INT_STATUS	0x060
#define VR_INT_ACK	0x064
#define VR_STATUS	0x070
#define VR_DESC_LO	0x080
#define VR_DESC_HI	0x084
#define VR_AVAIL_LO	0x090
#define VR_AVAIL_HI	0x094
#define VR_USED_LO	0x0a0
#define VR_USED_HI	0x0a4

/* Status bits (spec 2.1). */
#define VS_ACK		1
#define VS_DRIVER	2
#define VS_DRIVER_OK	4
#define VS_FEATURES_OK	8
#define VS_NEEDS_RESET	64
#define VS_FAILED	128

#define VD_WRITE	2
#define VD_NEXT		1

/* Device IDs (spec 5). */
#define VID_NET		1
#define VID_BLK		2
#define VID_CONSOLE	3
#define VID_RNG		4

/* A split virtqueue whose rings live at a fixed guest-physical address. */
struct vq {
	uint64_t base;	/* the device's MMIO window */
	unsigned idx;	/* queue index */
	uint16_t size;
	volatile uint8_t *desc, *avail, *used;
	uint16_t next_avail;	/* our copy of avail->idx */
};

static inline uint32_t vio_rd(uint64_t base, unsigned off) { return mmio_read32(base + off); }
static inline void vio_wr(uint64_t base, unsigned off, uint32_t v) { mmio_write32(base + off, v); }
static inline uint32_t vio_status(uint64_t base) { return vio_rd(base, VR_STATUS); }
static inline void vio_set_status(uint64_t base, uint32_t s) { vio_wr(base, VR_STATUS, s); }

/* Base of slot i if a virtio-mmio device answers there, else 0. */
uint64_t vio_slot(unsigned i);
/* Number of queues the device has (QueueNumMax != 0). */
unsigned vio_num_queues(uint64_t base);
/*
 * Reset, then ACK, DRIVER, the given features (VERSION_1 is always added)
 * and FEATURES_OK. Returns the status read back.
 */
uint32_t vio_negotiate(uint64_t base, uint32_t features_lo);
/*
 * Program queue `q` with `size` entries, rings in the guest-free area slot
 * `ring_slot` (0..35), and QueueReady=1. Registers are written whatever
 * the device's state: the VMM must ignore them once it is live.
 */
void vio_queue(struct vq *vq, uint64_t base, unsigned q, uint16_t size, unsigned ring_slot);
/* Post one descriptor (buf, len, flags) as a chain; notify if asked. */
void vio_post(struct vq *vq, uint64_t buf, uint32_t len, uint16_t flags, int notify);
/* Used index as the device last published it. */
uint16_t vio_used_idx(const struct vq *vq);
/* Wait until the device has used everything posted, or about `cycles` TSC ticks. Returns 1 if it has. */
int vio_wait(const struct vq *vq, uint64_t cycles);

#endif
