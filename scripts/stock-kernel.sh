#!/usr/bin/env bash
# Fetches one of Debian 12's stock kernels and unpacks what a microvm guest
# needs from it into the cache, once:
#
#   scripts/stock-kernel.sh cloud|generic     prints the directory
#
# cloud is linux-image-cloud-amd64, generic linux-image-amd64: metapackages,
# whose one Depends names the versioned image package, which is fetched
# with `apt-get download` (as the _apt user; apt-get update once if the
# lists do not know it). The directory, $CACHE/stock/<image package>/,
# holds:
#   vmlinuz        the bzImage
#   config         its build config (the package's /boot/config-<release>)
#   release        the kernel release, e.g. 6.1.0-57-cloud-amd64
#   modules/       the package's /lib/modules/<release>/kernel tree
#   virtio/        the virtio modules a microvm guest loads, in load order
#                  (each after the ones its depends= names): NN-name.ko
# A finished directory has all five; another run only prints its path.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

die() { echo "stock-kernel.sh: $*" >&2; exit 1; }
case ${1:-} in
cloud) META=linux-image-cloud-amd64 ;;
generic) META=linux-image-amd64 ;;
*) echo "usage: $0 cloud|generic" >&2; exit 2 ;;
esac

image_pkg() {
	apt-cache depends "$META" 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}'
}
PKG=$(image_pkg)
if [[ -z $PKG ]]; then
	echo "stock-kernel.sh: apt knows no $META; running apt-get update once" >&2
	as_root apt-get update -q >/dev/null || die "apt-get update failed"
	PKG=$(image_pkg)
fi
[[ -n $PKG ]] || die "apt knows no $META (is this Debian 12 with its main archive?)"
OUT=$CACHE/stock/$PKG
if [[ -s $OUT/vmlinuz && -s $OUT/config && -s $OUT/release && -d $OUT/modules && -d $OUT/virtio ]]; then
	echo "$OUT"
	exit 0
fi

mkdir -p "$CACHE/stock"
exec 9>"$CACHE/stock/.lock"
flock 9
DL=$(mktemp -d "$CACHE/stock/.dl.XXXXXX")
trap 'rm -rf "$DL"' EXIT
chmod 777 "$DL" # apt-get download drops privileges to _apt
echo "stock-kernel.sh: apt-get download $PKG" >&2
(cd "$DL" && apt-get download -q "$PKG" >/dev/null 2>&1) || {
	as_root apt-get update -q >/dev/null || die "apt-get update failed"
	(cd "$DL" && apt-get download -q "$PKG" >/dev/null) || die "apt-get download $PKG failed"
}
dpkg-deb -x "$DL"/*.deb "$DL/x"
vmlinuz=$(compgen -G "$DL/x/boot/vmlinuz-*" | head -1) || true
[[ -n $vmlinuz ]] || die "$PKG has no /boot/vmlinuz-*"
release=${vmlinuz##*/vmlinuz-}
[[ -d $DL/x/lib/modules/$release/kernel ]] || die "$PKG has no /lib/modules/$release/kernel"
rm -rf "$OUT.tmp"
mkdir -p "$OUT.tmp"
mv "$vmlinuz" "$OUT.tmp/vmlinuz"
mv "$DL/x/boot/config-$release" "$OUT.tmp/config"
mv "$DL/x/lib/modules/$release/kernel" "$OUT.tmp/modules"
mkdir "$OUT.tmp/virtio"
n=0
for m in drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_mmio drivers/block/virtio_blk \
	net/core/failover drivers/net/net_failover drivers/net/virtio_net drivers/char/virtio_console \
	drivers/char/hw_random/virtio-rng; do
	[[ -f $OUT.tmp/modules/$m.ko ]] || die "$PKG has no $m.ko"
	n=$((n + 1))
	cp "$OUT.tmp/modules/$m.ko" "$OUT.tmp/virtio/$(printf %02d $n)-${m##*/}.ko"
done
echo "$release" >"$OUT.tmp/release"
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
echo "$OUT"
