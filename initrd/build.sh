#!/usr/bin/env bash
# Builds the guest initramfs: u-root (busybox mode) + the microvm guest agent
# as /bin/uinit, written to $CACHE/initrd.cpio (uncompressed newc cpio).
#
#   CACHE is scripts/lib.sh's: $MICROVM_CACHE, else $XDG_CACHE_HOME/microvm,
#   else ~/.cache/microvm.
#
# The build is skipped when its inputs are unchanged (key = sha256 over go.mod,
# go.sum, this script, initrd/tools.go, the agent and agentproto sources and
# the Go version; stored in $CACHE/initrd.cpio.key). Set MICROVM_INITRD_FORCE=1
# to rebuild anyway. mkuimage's log goes to $CACHE/initrd.log and is shown on
# failure. The u-root commands included are listed in initrd/tools.go.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

source scripts/lib.sh
OUT=$CACHE/initrd.cpio
KEYFILE=$OUT.key
LOG=$CACHE/initrd.log
GO=${GO:-go}
AGENT_PKG=github.com/microvm-dev/microvm/initrd/agent
# The project's own commands next to u-root's (initrd/nc: the TCP tool).
OWN_PKGS=(github.com/microvm-dev/microvm/initrd/nc)

mkdir -p "$CACHE"

# Serialize concurrent builds (e.g. parallel test runs) on the same cache.
if command -v flock >/dev/null 2>&1; then
	exec 9>"$CACHE/.initrd.lock"
	flock 9
fi

goos=$("$GO" env GOOS)
goarch=$("$GO" env GOARCH)
if [[ $goos != linux || $goarch != amd64 ]]; then
	echo "initrd: the guest is linux/amd64 but go env says $goos/$goarch" >&2
	exit 1
fi

# u-root commands to include: the blank imports of initrd/tools.go.
mapfile -t CMDS < <(sed -n 's/^[[:space:]]*_ "\([^"]*\)"[[:space:]]*$/\1/p' initrd/tools.go)
if ((${#CMDS[@]} == 0)); then
	echo "initrd: no commands found in initrd/tools.go" >&2
	exit 1
fi

cache_key() {
	{
		"$GO" version
		echo "$goos/$goarch"
		find go.mod go.sum initrd/build.sh initrd/tools.go initrd/agent initrd/nc agentproto \
			-type f ! -name '*_test.go' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
	} | sha256sum | cut -d' ' -f1
}
key=$(cache_key)

if [[ ${MICROVM_INITRD_FORCE:-0} != 1 && -s $OUT && -f $KEYFILE && $(<"$KEYFILE") == "$key" ]]; then
	echo "initrd: cached $OUT"
	exit 0
fi

tmp=$(mktemp "$OUT.tmp.XXXXXX")
trap 'rm -f "$tmp" "$tmp.key"' EXIT

start=$(date +%s.%N)
echo "initrd [1/2] building u-root + agent with mkuimage (${#CMDS[@]} u-root commands; log: $LOG) ..."

# -build=bb: one busybox binary /bbin/bb, commands are symlinks to it.
# -uinitcmd=agent: /bin/uinit -> ../bbin/agent, which u-root's init runs.
# -defaultsh=gosh: /bin/sh -> ../bbin/gosh (supports -c).
# goshsmall: gosh without the bubbline line editor (smaller; no interactive
# use yet).
mkuimage=(
	"$GO" tool mkuimage
	-build=bb
	-format=cpio
	-o "$tmp"
	-initcmd=init
	-uinitcmd=agent
	-defaultsh=gosh
	-go-build-tags=goshsmall
	"${CMDS[@]}"
	"${OWN_PKGS[@]}"
	"$AGENT_PKG"
)
if ! { echo "+ ${mkuimage[*]}"; CGO_ENABLED=0 "${mkuimage[@]}"; } >"$LOG" 2>&1; then
	echo "initrd: mkuimage failed; log $LOG:" >&2
	tail -n 100 "$LOG" >&2
	exit 1
fi

# Sanity check: the newc headers carry the file names in clear text.
for f in bbin/bb bin/uinit bin/sh; do
	if ! grep -qaF "$f" "$tmp"; then
		echo "initrd: $f missing from the archive; log $LOG" >&2
		exit 1
	fi
done

chmod 0644 "$tmp"
mv -f "$tmp" "$OUT"
echo "$key" >"$tmp.key"
mv -f "$tmp.key" "$KEYFILE"

end=$(date +%s.%N)
size=$(stat -c %s "$OUT")
human=$(numfmt --to=iec-i --suffix=B "$size" 2>/dev/null || echo "${size}B")
secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
echo "initrd [2/2] done: $OUT $human in ${secs}s"
