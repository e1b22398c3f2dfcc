# microvm build and test entry points. Every target installs what it needs,
# so a fresh Debian machine needs only `make run-demo` and `make test`.

GO        ?= go
CACHE     ?= $(shell ./scripts/lib.sh cache-dir)
BIN       := bin/microvm
export MICROVM_CACHE := $(CACHE)

.PHONY: all build kernel initrd distro test test-unit test-vm test-nested bench-density bench-snapshot soak demo compare vet clean bench compare-bench

all: build

build: $(BIN)

# Static so the same binary runs inside the nested harness's L1 initramfs.
$(BIN): FORCE
	CGO_ENABLED=0 $(GO) build -trimpath -o $@ ./cmd/microvm

FORCE:

kernel:
	./kernel/build.sh

initrd:
	./initrd/build.sh

# A whole Debian 12 disk image with its stock kernel and initrd, in the
# cache (scripts/distro.sh; prints the directory).
distro:
	./scripts/distro.sh

# The main job: show host vs guest kernels (via the nested harness where the
# host's KVM cannot boot Linux).
demo:
	./scripts/demo.sh

# "Container or VM?" with both columns measured: one Debian minbase root
# (cached), in podman and in microvm --rootfs. See scripts/compare.sh.
compare:
	./scripts/compare.sh

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }

# Everything but ./tests, whose VM tests run under tests/run.sh. iasl
# (acpica-tools) checks the ACPI tables and the AML encoder. Without cgo, as
# bin/microvm is built: the sandbox's all-threads calls need a binary without it
# (p9fs.TestSandboxedBackend applies the whole sandbox in a child).
test-unit:
	./scripts/acpica-tools.sh
	CGO_ENABLED=0 $(GO) test $$($(GO) list ./... | grep -v '/tests$$')

# The VM tests: run directly where /dev/kvm is hardware-backed, otherwise
# inside the nested harness (QEMU TCG L1 with kvm_amd).
test-vm: build
	./tests/run.sh

test-nested: build
	MICROVM_FORCE_NESTED=1 ./tests/run.sh

test: vet test-unit test-vm

# Density benchmark: N (default 50) concurrent 64 MiB Linux guests, each
# running a command through `microvm run`; prints host RSS per VM. Under
# the nested harness they share one L1 (given 8 GiB here).
DENSITY_N ?= 50
bench-density: build
	MICROVM_DENSITY_N=$(DENSITY_N) L1_MEMORY_MIB=$${L1_MEMORY_MIB:-8192} GROUP_TIMEOUT_MIN=$${GROUP_TIMEOUT_MIN:-40} \
		TESTS_TIMEOUT_MIN=45 TESTS_RUN='^TestLinuxDensity$$' ./tests/run.sh

# Snapshot density (issue 15): SNAP_DENSITY_N restored 64 MiB guests all up
# at once, started SNAP_DENSITY_PARALLEL at a time (memory per VM), in one
# L1 given 8 GiB under the nested harness. The restore timings, against a
# cold boot and QEMU's restore, are part of `make bench`.
SNAP_DENSITY_N ?= 50
SNAP_DENSITY_PARALLEL ?= 2
bench-snapshot: build
	MICROVM_SNAP_DENSITY_N=$(SNAP_DENSITY_N) MICROVM_SNAP_DENSITY_PARALLEL=$(SNAP_DENSITY_PARALLEL) L1_MEMORY_MIB=$${L1_MEMORY_MIB:-8192} \
		GROUP_TIMEOUT_MIN=$${GROUP_TIMEOUT_MIN:-40} TESTS_TIMEOUT_MIN=45 \
		TESTS_RUN='^TestLinuxSnapshotDensity$$' ./tests/run.sh

# The harness's stall probe (tests/soak_test.go): SOAK_N sequential (or
# SOAK_PARALLEL at a time) `microvm run -- true` in one L1, each with a 60 s
# watchdog. L1_APPEND=... tries an L1 kernel parameter; see tests/nested/NOTES.md.
SOAK_N ?= 50
soak: build
	MICROVM_SOAK_N=$(SOAK_N) MICROVM_SOAK_PARALLEL=$${SOAK_PARALLEL:-1} MICROVM_SOAK_CPUS=$${SOAK_CPUS:-1} \
		GROUP_TIMEOUT_MIN=$${GROUP_TIMEOUT_MIN:-60} TESTS_RUN='^TestLinuxSoak$$' ./tests/run.sh

# Benchmarks (not part of `make test`): the PIO exit path against a C loop,
# `microvm bench`, and microvm against gokvm and QEMU -M microvm; inside the
# nested harness where the host's KVM cannot boot Linux. See bench/compare.sh.
bench compare-bench:
	./bench/compare.sh

clean:
	rm -rf bin
