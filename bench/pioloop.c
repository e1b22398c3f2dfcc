/*
 * pioloop: the C baseline of the exit-path benchmark (bench/runner "pio").
 *
 * It does what microvm's vCPU loop does for the pio micro-guest, with
 * nothing else around it: a VM with the in-kernel IRQ chip (as microvm
 * creates it), one vCPU in 64-bit mode with paging on (as microvm starts the
 * micro-guest: the guest's mode changes what KVM does on each exit)
 * running
 *
 *	mov ecx, N; mov dx, 0x3f4; 1: out dx, eax; dec ecx; jnz 1b; hlt
 *
 * and a loop of KVM_RUN ioctls, each returning with KVM_EXIT_IO for the
 * 32-bit OUT (Documentation/virt/kvm/api.rst, "kvm_run"). The time from
 * the first exit to the Nth, divided by N-1, is the round-trip time.
 *
 * usage: pioloop [N]   (default 100000)
 * prints: pioloop: N exits, T s, U us/exit
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define NOOP_PORT 0x3f4
#define PML4_ADDR 0x1000 /* then PDPT at 0x2000, PD at 0x3000 */
#define CODE_ADDR 0x4000
#define MEM_SIZE  0x200000

static void die(const char *what)
{
	fprintf(stderr, "pioloop: %s: %s\n", what, strerror(errno));
	exit(1);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	long n = 100000;
	if (argc > 1) {
		char *end;
		n = strtol(argv[1], &end, 10);
		if (*end || n < 2 || n > 0x7fffffff) {
			fprintf(stderr, "pioloop: count %s: need a whole number from 2 to 2^31-1\n", argv[1]);
			return 2;
		}
	}
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		die("open /dev/kvm");
	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0)
		die("KVM_CREATE_VM");
	if (ioctl(vm, KVM_SET_TSS_ADDR, 0xfffbd000UL) < 0)
		die("KVM_SET_TSS_ADDR");
	if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0)
		die("KVM_CREATE_IRQCHIP");

	uint8_t *mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		die("mmap guest memory");
	uint32_t cnt = (uint32_t)n;
	uint8_t code[] = {
		0xb9, cnt, cnt >> 8, cnt >> 16, cnt >> 24,      /* mov ecx, n */
		0x66, 0xba, NOOP_PORT & 0xff, NOOP_PORT >> 8,   /* mov dx, 0x3f4 */
		0xef,                                           /* 1: out dx, eax */
		0xff, 0xc9,                                     /* dec ecx */
		0x75, 0xfb,                                     /* jnz 1b */
		0xf4,                                           /* hlt */
	};
	/* Identity map of the first 2 MiB with one 2 MiB page. */
	uint64_t *pml4 = (uint64_t *)(mem + PML4_ADDR);
	pml4[0] = (PML4_ADDR + 0x1000) | 3;
	pml4[512] = (PML4_ADDR + 0x2000) | 3; /* PDPT[0] */
	pml4[1024] = 0x83;                    /* PD[0]: present, writable, 2 MiB */
	memcpy(mem + CODE_ADDR, code, sizeof(code));
	struct kvm_userspace_memory_region region = {
		.slot = 0, .guest_phys_addr = 0, .memory_size = MEM_SIZE,
		.userspace_addr = (uintptr_t)mem,
	};
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
		die("KVM_SET_USER_MEMORY_REGION");

	int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (vcpu < 0)
		die("KVM_CREATE_VCPU");
	int runsz = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (runsz < 0)
		die("KVM_GET_VCPU_MMAP_SIZE");
	struct kvm_run *run = mmap(NULL, runsz, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED)
		die("mmap kvm_run");

	/* Long mode needs a guest CPUID that has it (KVM checks EFER.LME
	 * against it): give the vCPU what KVM supports, as microvm does. */
	struct {
		struct kvm_cpuid2 c;
		struct kvm_cpuid_entry2 e[256];
	} cpuid = { .c.nent = 256 };
	if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, &cpuid) < 0)
		die("KVM_GET_SUPPORTED_CPUID");
	if (ioctl(vcpu, KVM_SET_CPUID2, &cpuid) < 0)
		die("KVM_SET_CPUID2");

	struct kvm_sregs sregs;
	if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0)
		die("KVM_GET_SREGS");
	struct kvm_segment cs = {
		.base = 0, .limit = 0xffffffff, .selector = 0x8, .type = 11,
		.present = 1, .dpl = 0, .db = 0, .s = 1, .l = 1, .g = 1,
	};
	struct kvm_segment ds = cs;
	ds.selector = 0x10, ds.type = 3, ds.l = 0, ds.db = 1;
	sregs.cs = cs;
	sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = ds;
	sregs.cr3 = PML4_ADDR;
	sregs.cr4 = 1 << 5;                       /* PAE */
	sregs.cr0 = 1 | 1 << 4 | 1u << 31;        /* PE, ET, PG */
	sregs.efer = 1 << 8 | 1 << 10;            /* LME, LMA */
	if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0)
		die("KVM_SET_SREGS");
	struct kvm_regs regs = { .rip = CODE_ADDR, .rflags = 2 };
	if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0)
		die("KVM_SET_REGS");

	double t0 = 0;
	for (long i = 0; i < n;) {
		if (ioctl(vcpu, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			die("KVM_RUN");
		}
		if (run->exit_reason != KVM_EXIT_IO || run->io.port != NOOP_PORT ||
		    run->io.direction != KVM_EXIT_IO_OUT || run->io.size != 4) {
			fprintf(stderr, "pioloop: unexpected exit %u (port %#x) after %ld exits\n",
				run->exit_reason, run->io.port, i);
			return 1;
		}
		/* What a device model would touch: the data in the kvm_run page. */
		volatile uint32_t v = *(uint32_t *)((uint8_t *)run + run->io.data_offset);
		(void)v;
		if (++i == 1)
			t0 = now();
	}
	double dt = now() - t0;
	printf("pioloop: %ld exits, %.3f s, %.2f us/exit\n", n, dt, dt / (n - 1) * 1e6);
	return 0;
}
