#!/usr/bin/env bash
# Builds a minimal Debian 12 (bookworm) that boots like a real VM, once per
# recipe:
#
#   scripts/distro.sh        prints the directory
#
# debootstrap --variant=minbase with systemd, udev and the stock cloud
# kernel, whose package makes its own initrd with initramfs-tools; then
# mkfs.ext4 -d turns the tree into a disk image. The directory,
# $CACHE/distro/<recipe hash>/, holds:
#   debian.img     ext4 root filesystem (root=/dev/vda), content plus slack
#   vmlinuz        the image's kernel (a copy of its /boot/vmlinuz-*)
#   initrd.img     the image's initramfs-tools initrd (virtio_mmio,
#                  virtio_blk and ext4 in it, so it finds the disk)
#   release        the kernel release, e.g. 6.1.0-37-cloud-amd64
# The hash covers this file, so a changed recipe builds a new directory
# (and the old ones are removed). Boot it with:
#
#   microvm boot --kernel $dir/vmlinuz --initrd $dir/initrd.img --disk $dir/debian.img \
#       --memory 512M --cmdline "root=/dev/vda rw console=ttyS0"
#
# On multi-user.target the unit microvm-distro-up.service prints
# "MICROVM-DISTRO-UP uptime=<s> boot_id=<id> multi-user=active failed=<n>"
# on the console, writes the
# same line to /var/lib/microvm/distro-up, and powers the machine off.
#
# DISTRO_MIRROR overrides the Debian mirror (default: the one apt uses).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export PATH=$PATH:/usr/sbin:/sbin

log() { echo "distro.sh: $*" >&2; }
die() { log "$*"; exit 1; }

SUITE=bookworm
# What boots systemd to multi-user from /dev/vda with the stock kernel:
# systemd-sysv (init), udev (device nodes, /dev/vda), the kernel and its
# initrd generator (initramfs-tools, which needs kmod to find modules, and
# zstd, its default compression, which it recommends: without it the initrd
# is gzip, larger and slower for the guest to unpack).
PACKAGES=systemd-sysv,udev,kmod,initramfs-tools,zstd,linux-image-cloud-amd64
# Free space in the image beyond its content: the journal, the marker
# file, and what a user would try first.
SLACK_MIB=96

KEY=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)
BASE=$CACHE/distro
OUT=$BASE/$KEY
if [[ -s $OUT/debian.img && -s $OUT/vmlinuz && -s $OUT/initrd.img && -s $OUT/release ]]; then
	echo "$OUT"
	exit 0
fi

# The mirror apt already uses for bookworm main (one-line or deb822
# sources); there is no other way out of some machines.
apt_mirror() {
	{
		grep -hsE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}'
		grep -hsE '^[[:space:]]*URIs:' /etc/apt/sources.list.d/*.sources | awk '{for (i = 2; i <= NF; i++) print $i}'
	} | grep -E '/debian/?$' | head -n1
}
MIRROR=${DISTRO_MIRROR:-$(apt_mirror)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}

missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
{ command -v mkfs.ext4 >/dev/null && command -v debugfs >/dev/null; } || missing+=(e2fsprogs)
if ((${#missing[@]})); then
	log "installing ${missing[*]}"
	apt_install "${missing[@]}"
fi

mkdir -p "$BASE"
exec 9>"$BASE/.lock"
flock 9
# Downloaded .debs outlive a recipe change (debootstrap --cache-dir).
mkdir -p "$BASE/debs"
WORK=$(mktemp -d "$BASE/.build.XXXXXX")
ROOTFS=$WORK/rootfs
trap 'as_root rm -rf "$WORK"' EXIT

log "[1/4] debootstrap $SUITE (minbase + $PACKAGES) from $MIRROR"
# Every debootstrap line goes to its log; the terminal gets each phase and
# every 25th package, and the log's tail if it fails.
rc=0
as_root debootstrap --variant=minbase --include="$PACKAGES" --components=main \
	--cache-dir="$BASE/debs" "$SUITE" "$ROOTFS" "$MIRROR" 2>&1 | tee "$WORK/debootstrap.log" |
	awk '/^I: (Retrieving|Validating|Extracting|Unpacking|Configuring) / { if (n[$2]++ % 25) next } /^[IWE]: / { print "  " $0; fflush() }' >&2 ||
	rc=$?
if ((rc != 0)) || [[ ! -x $ROOTFS/sbin/init ]]; then
	tail -n 20 "$WORK/debootstrap.log" >&2
	[[ ! -f $ROOTFS/debootstrap/debootstrap.log ]] || tail -n 20 "$ROOTFS/debootstrap/debootstrap.log" >&2
	die "debootstrap failed"
fi

log "[2/4] configuring: fstab, hostname, initrd modules, the marker unit"
as_root tee "$ROOTFS/etc/fstab" >/dev/null <<'EOF'
# microvm: the one virtio-blk disk. No fsck pass: the image is made fresh.
/dev/vda / ext4 rw,errors=remount-ro 0 0
EOF
echo microvm-debian | as_root tee "$ROOTFS/etc/hostname" >/dev/null
# The stock kernel has virtio_mmio and virtio_blk as modules and finds the
# disk only once they are loaded: the initrd must carry them (initramfs-
# tools' MODULES=most need not include a platform bus driver).
as_root tee -a "$ROOTFS/etc/initramfs-tools/modules" >/dev/null <<'EOF'
virtio_mmio
virtio_blk
ext4
EOF
# A machine-id makes this not a "first boot": systemd-firstboot would
# otherwise prompt on the console for a locale and a root password.
[[ -s $ROOTFS/etc/machine-id ]] || as_root chroot "$ROOTFS" systemd-machine-id-setup >/dev/null
as_root mkdir -p "$ROOTFS/usr/local/sbin" "$ROOTFS/var/lib/microvm"
as_root tee "$ROOTFS/usr/local/sbin/microvm-distro-up" >/dev/null <<'EOF'
#!/bin/sh
# Runs once multi-user.target is reached: the line on the console is what
# the host waits for, the file is what it reads back from the disk.
# (systemd's own "Reached target" lines stop once a getty owns the
# console, so the unit says it: multi-user.target's state and how many
# units failed on the way.)
line="MICROVM-DISTRO-UP uptime=$(cut -d' ' -f1 /proc/uptime) boot_id=$(cat /proc/sys/kernel/random/boot_id)"
line="$line multi-user=$(systemctl is-active multi-user.target) failed=$(systemctl list-units --failed --plain --no-legend | wc -l)"
echo "$line" >/var/lib/microvm/distro-up
sync
echo "$line" >/dev/console
systemctl --no-pager --failed >/dev/console 2>&1
exec systemctl --no-block poweroff
EOF
as_root chmod 755 "$ROOTFS/usr/local/sbin/microvm-distro-up"
as_root tee "$ROOTFS/etc/systemd/system/microvm-distro-up.service" >/dev/null <<'EOF'
[Unit]
Description=microvm: say multi-user is up, then power off
# Pulled in by multi-user.target but ordered after it: it starts when the
# target has been reached.
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/microvm-distro-up

[Install]
WantedBy=multi-user.target
EOF
as_root chroot "$ROOTFS" systemctl enable microvm-distro-up.service >/dev/null 2>&1
as_root chroot "$ROOTFS" systemctl is-enabled microvm-distro-up.service >/dev/null || die "could not enable the marker unit"

release=$(cd "$ROOTFS/lib/modules" && ls | head -n1)
[[ -n $release && -f $ROOTFS/boot/vmlinuz-$release ]] || die "no kernel in the image"
log "  kernel $release: update-initramfs with virtio_mmio, virtio_blk, ext4"
as_root chroot "$ROOTFS" update-initramfs -u -k "$release" >/dev/null
# (grep -c, which reads to the end: grep -q would close the pipe early and
# pipefail would count lsinitramfs's SIGPIPE as a failure.)
initrd_files=$(as_root chroot "$ROOTFS" lsinitramfs "/boot/initrd.img-$release")
builtin=$(<"$ROOTFS/lib/modules/$release/modules.builtin")
for m in virtio_mmio virtio_blk ext4; do
	printf '%s\n%s\n' "$initrd_files" "$builtin" | grep -c "/$m\.ko" >/dev/null ||
		die "$m is neither in the initrd nor built into $release"
done

log "[3/4] trimming: docs, man pages, locales, apt lists and caches"
as_root rm -rf "$ROOTFS"/usr/share/{doc,man,info,locale}/* "$ROOTFS"/var/lib/apt/lists/* \
	"$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/log/*.log

# Content plus slack; the harness copies the image into L1's RAM whole, so
# it is kept no bigger than that.
content_mib=$(($(as_root du -sm "$ROOTFS" | cut -f1)))
size_mib=$((content_mib * 11 / 10 + SLACK_MIB))
log "[4/4] mkfs.ext4 -d: ${content_mib} MiB of files in a ${size_mib} MiB image"
mkdir -p "$WORK/out"
truncate -s "${size_mib}M" "$WORK/out/debian.img"
as_root mkfs.ext4 -q -F -L debian -d "$ROOTFS" "$WORK/out/debian.img"
cp "$ROOTFS/boot/vmlinuz-$release" "$WORK/out/vmlinuz"
cp "$ROOTFS/boot/initrd.img-$release" "$WORK/out/initrd.img"
echo "$release" >"$WORK/out/release"

for old in "$BASE"/*; do
	[[ -d $old && $old != "$BASE/debs" ]] || continue
	log "removing the build of an older recipe: $old"
	as_root rm -rf "$old"
done
mv "$WORK/out" "$OUT"
echo "$OUT"
