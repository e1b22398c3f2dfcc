#!/usr/bin/env bash
# Builds the pinned microvm guest kernel (also the nested harness's L1 host
# kernel) and caches it. Run as `make kernel`.
#
#   kernel/microvm.config   config fragment applied on top of `make tinyconfig`
#
# Outputs (CACHE = scripts/lib.sh's: $MICROVM_CACHE, else
# $XDG_CACHE_HOME/microvm, else ~/.cache/microvm):
#   $CACHE/kernel/<key12>/{bzImage,vmlinux,release,config,build.log}
#   $CACHE/bzImage, $CACHE/vmlinux, $CACHE/kernel.release, $CACHE/kernel.config
#     symlinks to the above, swapped atomically.
# key12 = first 12 hex digits of sha256(recipe version, the fragment's option
# lines, source version). When $CACHE/kernel/<key12>/bzImage exists the script only
# refreshes the symlinks and exits.
#
# Source, in order of preference:
#   KERNEL_SRC=/path/to/tree          a Linux 6.12 tree (built out of tree; must be clean)
#   KERNEL_SRC=/path/linux.tar.{xz,gz,bz2}  unpacked once into $CACHE/src/tar-<hash12>/
#   otherwise Debian's linux-source-6.12 package, unpacked once into
#   $CACHE/src/<debian-version>/. The first version fetched is pinned in
#   $CACHE/src/linux-source-6.12.pin so later apt list updates don't trigger
#   a rebuild; KERNEL_DEB_VERSION=<version> picks another one explicitly.
#
# Other knobs: KERNEL_JOBS (default nproc), MICROVM_KERNEL_KEEP_OBJ=1 keeps
# the object tree after a successful build.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FRAGMENT=$HERE/microvm.config
source "$HERE/../scripts/lib.sh"
DEB_PKG=linux-source-6.12
# Bump when the recipe below changes in a way that changes the outputs.
RECIPE=microvm-kernel-recipe-1
# Object files in a full build of microvm.config; refined after each build.
DEFAULT_OBJ_ESTIMATE=960

export ARCH=x86_64
export LOCALVERSION=-microvm
export KBUILD_BUILD_USER=microvm
export KBUILD_BUILD_HOST=microvm
export KBUILD_BUILD_TIMESTAMP="Wed Jan  1 00:00:00 UTC 2025"
export KBUILD_BUILD_VERSION=1
# Don't inherit the outer make's jobserver/flags, or a stray output dir.
unset MAKEFLAGS MFLAGS MAKELEVEL MAKEOVERRIDES GNUMAKEFLAGS KBUILD_OUTPUT CROSS_COMPILE

T0=$SECONDS
say() { printf 'kernel: %s\n' "$*"; }
stage() { local n=$1; shift; printf 'kernel [%s/5] %s\n' "$n" "$*"; }
die() { printf 'kernel: error: %s\n' "$*" >&2; exit 1; }
fmt_secs() { local s=$1; if ((s >= 60)); then printf '%dm%02ds' $((s / 60)) $((s % 60)); else printf '%ds' "$s"; fi; }

[[ -f $FRAGMENT ]] || die "missing $FRAGMENT"
[[ $(uname -m) == x86_64 ]] || die "only x86_64 build hosts are supported (this is $(uname -m))"

# ---------------------------------------------------------------- source
# Sets SRC_KIND (tree|tarball|debian), SRC_VERSION (goes into the cache key),
# SRC_DIR (where the unpacked tree is or will be) and, for debian, DEB_VERSION.
PIN_FILE=$CACHE/src/$DEB_PKG.pin

deb_candidate() {
	apt-cache policy "$DEB_PKG" 2>/dev/null | awk '/Candidate:/ {print $2; exit}'
}

resolve_source() {
	if [[ -n ${KERNEL_SRC:-} ]]; then
		[[ -e $KERNEL_SRC ]] || die "KERNEL_SRC=$KERNEL_SRC does not exist"
		local p
		p=$(realpath "$KERNEL_SRC")
		if [[ -d $p ]]; then
			[[ -f $p/Makefile && -f $p/Kconfig ]] || die "KERNEL_SRC=$p is not a Linux source tree"
			SRC_KIND=tree
			SRC_DIR=$p
			SRC_VERSION="tree:$p:$(make -s --no-print-directory -C "$p" kernelversion)"
		else
			case $p in
			*.tar.xz | *.tar.gz | *.tgz | *.tar.bz2) ;;
			*) die "KERNEL_SRC=$p: expected a directory or a .tar.xz/.tar.gz/.tar.bz2 tarball" ;;
			esac
			SRC_KIND=tarball
			SRC_TARBALL=$p
			# sha256 of the tarball, memoized by path+size+mtime.
			local stamp memo=$CACHE/src/tarball-hashes hash=
			stamp="$p $(stat -c '%s %Y' "$p")"
			if [[ -f $memo ]]; then
				hash=$(awk -v s="$stamp" 'substr($0, 1, length(s)) == s && length($0) == length(s) + 65 {print substr($0, length(s) + 2)}' "$memo" | tail -1)
			fi
			if [[ -z $hash ]]; then
				hash=$(sha256sum "$p" | cut -d' ' -f1)
				mkdir -p "$CACHE/src"
				printf '%s %s\n' "$stamp" "$hash" >>"$memo"
			fi
			SRC_VERSION="tarball:sha256:$hash"
			SRC_DIR=$CACHE/src/tar-${hash:0:12}
		fi
		return
	fi
	SRC_KIND=debian
	DEB_VERSION=${KERNEL_DEB_VERSION:-}
	if [[ -z $DEB_VERSION && -s $PIN_FILE ]]; then
		DEB_VERSION=$(<"$PIN_FILE")
	fi
	if [[ -z $DEB_VERSION ]]; then
		DEB_VERSION=$(deb_candidate)
		if [[ -z $DEB_VERSION || $DEB_VERSION == "(none)" ]]; then
			say "no $DEB_PKG candidate in the apt lists; running apt-get update"
			as_root apt-get update -q >/dev/null || die "apt-get update failed"
			DEB_VERSION=$(deb_candidate)
		fi
		[[ -n $DEB_VERSION && $DEB_VERSION != "(none)" ]] ||
			die "apt knows no $DEB_PKG package (set KERNEL_SRC to a Linux 6.12 tree or tarball)"
	fi
	SRC_VERSION="debian:$DEB_PKG=$DEB_VERSION"
	SRC_DIR=$CACHE/src/$DEB_VERSION
}

# The fragment's option lines, trailing blanks stripped: comments and
# blank lines don't change the key.
fragment_options() {
	grep -E '^(CONFIG_[A-Za-z0-9_]+=|# CONFIG_[A-Za-z0-9_]+ is not set)' "$FRAGMENT" | sed -E 's/[[:space:]]+$//'
}

compute_key() {
	KEY=$({
		printf '%s\n' "$RECIPE" "$SRC_VERSION" "$ARCH" "$LOCALVERSION"
		fragment_options
	} | sha256sum | cut -c1-12)
	OUT=$CACHE/kernel/$KEY
}

# Atomically point $CACHE/<name> at kernel/<key>/<file>.
publish() {
	local name=$1 file=$2 tmp
	tmp=$CACHE/.$name.tmp.$$
	ln -sfn "kernel/$KEY/$file" "$tmp"
	mv -Tf "$tmp" "$CACHE/$name"
}

publish_all() {
	publish vmlinux vmlinux
	publish kernel.release release
	publish kernel.config config
	publish bzImage bzImage
}

cached_exit() {
	publish_all
	say "cached $OUT/bzImage ($(<"$OUT/release"))"
	exit 0
}

resolve_source
compute_key
[[ -f $OUT/bzImage ]] && cached_exit

# ------------------------------------------------------------- slow path
mkdir -p "$CACHE/kernel" "$CACHE/src"
exec 9>"$CACHE/.kernel.lock"
if ! flock -n 9; then
	say "another kernel build holds $CACHE/.kernel.lock; waiting"
	flock 9
fi
[[ -f $OUT/bzImage ]] && cached_exit # built by whoever held the lock

ensure_build_deps() {
	local missing=() c p
	for c in gcc make flex bison bc cpio xz gzip; do
		command -v "$c" >/dev/null || missing+=("$c")
	done
	for p in build-essential libelf-dev libssl-dev; do
		dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
	done
	((${#missing[@]} == 0)) && return
	say "missing build dependencies (${missing[*]}); installing them with apt-get"
	local pkgs=(build-essential flex bison bc libelf-dev libssl-dev cpio xz-utils)
	apt_install "${pkgs[@]}" || die "could not install build dependencies: ${pkgs[*]}"
}
ensure_build_deps

# [1/5] fetch
DL=
cleanup() { [[ -n $DL ]] && rm -rf "$DL"; return 0; }
trap cleanup EXIT

fetch_deb() { # $1 = version; leaves the tarball path in TARBALL
	local ver=$1
	DL=$(mktemp -d "$CACHE/src/.dl.XXXXXX")
	chmod 777 "$DL" # apt-get download drops privileges to _apt
	if ! (cd "$DL" && apt-get download -q "$DEB_PKG=$ver" >/dev/null 2>&1); then
		say "apt-get download $DEB_PKG=$ver failed; running apt-get update and retrying"
		as_root apt-get update -q >/dev/null || die "apt-get update failed"
		(cd "$DL" && apt-get download -q "$DEB_PKG=$ver" >/dev/null) || return 1
	fi
	local deb
	deb=$(ls "$DL"/*.deb)
	dpkg-deb -x "$deb" "$DL/x"
	rm -f "$deb"
	TARBALL=$(compgen -G "$DL/x/usr/src/linux-source-*.tar.*" | head -1) || true
	[[ -n $TARBALL ]] || die "$DEB_PKG $ver has no usr/src/linux-source-*.tar.* in it"
}

TARBALL=
case $SRC_KIND in
tree)
	stage 1 "fetching source: using tree $SRC_DIR ($SRC_VERSION)"
	;;
tarball)
	stage 1 "fetching source: using tarball $SRC_TARBALL"
	TARBALL=$SRC_TARBALL
	;;
debian)
	if [[ -f $SRC_DIR/.unpacked ]]; then
		stage 1 "fetching source: $DEB_PKG $DEB_VERSION already unpacked"
	else
		stage 1 "fetching source: apt-get download $DEB_PKG=$DEB_VERSION"
		if ! fetch_deb "$DEB_VERSION"; then
			# A pinned version may have left the archive; fall back to the
			# current candidate unless the version was asked for explicitly.
			[[ -z ${KERNEL_DEB_VERSION:-} ]] || die "cannot download $DEB_PKG=$DEB_VERSION"
			rm -rf "$DL"
			cand=$(deb_candidate)
			[[ -n $cand && $cand != "(none)" && $cand != "$DEB_VERSION" ]] ||
				die "cannot download $DEB_PKG=$DEB_VERSION"
			say "$DEB_PKG=$DEB_VERSION is gone from the archive; using $cand"
			DEB_VERSION=$cand
			SRC_VERSION="debian:$DEB_PKG=$DEB_VERSION"
			SRC_DIR=$CACHE/src/$DEB_VERSION
			compute_key
			[[ -f $OUT/bzImage ]] && cached_exit
			fetch_deb "$DEB_VERSION" || die "cannot download $DEB_PKG=$DEB_VERSION"
		fi
	fi
	;;
esac

# [2/5] unpack
if [[ $SRC_KIND == tree ]]; then
	stage 2 "unpacking: not needed"
elif [[ -f $SRC_DIR/.unpacked ]]; then
	stage 2 "unpacking: already in $SRC_DIR"
else
	stage 2 "unpacking $(basename "$TARBALL") into $SRC_DIR"
	rm -rf "$SRC_DIR" "$SRC_DIR.tmp"
	mkdir -p "$SRC_DIR.tmp"
	tar -xf "$TARBALL" -C "$SRC_DIR.tmp"
	# Strip a single top-level directory (linux-source-6.12/, linux-6.12.x/).
	mapfile -t top < <(ls -A "$SRC_DIR.tmp")
	if ((${#top[@]} == 1)) && [[ -d $SRC_DIR.tmp/${top[0]} ]]; then
		mv "$SRC_DIR.tmp/${top[0]}" "$SRC_DIR"
		rmdir "$SRC_DIR.tmp"
	else
		mv "$SRC_DIR.tmp" "$SRC_DIR"
	fi
	[[ -f $SRC_DIR/Makefile && -f $SRC_DIR/Kconfig ]] || die "$TARBALL does not contain a Linux source tree"
	touch "$SRC_DIR/.unpacked"
	if [[ -n $DL ]]; then rm -rf "$DL"; DL=; fi
fi
if [[ $SRC_KIND == debian ]]; then
	printf '%s\n' "$DEB_VERSION" >"$PIN_FILE.tmp" && mv -f "$PIN_FILE.tmp" "$PIN_FILE"
fi

# [3/5] configure
OBJ=$OUT/obj
LOG=$OUT/build.log
mkdir -p "$OBJ"
: >"$LOG"
kmake() { make -C "$SRC_DIR" O="$OBJ" "$@"; }

fail_with_log() {
	printf 'kernel: error: %s; last 40 lines of %s:\n' "$1" "$LOG" >&2
	tail -n 40 "$LOG" >&2
	exit 1
}

stage 3 "configuring: tinyconfig + $(basename "$FRAGMENT") in $OBJ"
{
	echo "### source: $SRC_VERSION ($SRC_DIR)"
	echo "### key: $KEY"
} >>"$LOG"
kmake tinyconfig >>"$LOG" 2>&1 || fail_with_log "make tinyconfig failed"
# allnoconfig semantics: tinyconfig's result plus the fragment (later lines
# win); every prompted option named in neither stays off instead of taking
# its default.
cat "$OBJ/.config" "$FRAGMENT" >"$OBJ/microvm.allconfig"
kmake KCONFIG_ALLCONFIG="$OBJ/microvm.allconfig" allnoconfig >>"$LOG" 2>&1 || fail_with_log "make allnoconfig failed"
kmake olddefconfig >>"$LOG" 2>&1 || fail_with_log "make olddefconfig failed"

# Every option the fragment asks for must have survived.
dropped=()
while IFS= read -r line; do
	line=${line%"${line##*[![:space:]]}"} # strip trailing blanks
	if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
		grep -qxF -- "$line" "$OBJ/.config" ||
			dropped+=("$line (got: $(grep -E "^(# )?${BASH_REMATCH[1]}[= ]" "$OBJ/.config" || echo "absent"))")
	elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
		! grep -qE "^${BASH_REMATCH[1]}=[ym]$" "$OBJ/.config" ||
			dropped+=("$line (got: $(grep -E "^${BASH_REMATCH[1]}=" "$OBJ/.config"))")
	fi
done <"$FRAGMENT"
if ((${#dropped[@]})); then
	{
		echo "kernel: error: $((${#dropped[@]})) option(s) from $(basename "$FRAGMENT") did not end up in the final .config"
		echo "kernel: (their dependencies are missing: add those to the fragment):"
		printf 'kernel:   %s\n' "${dropped[@]}"
		echo "kernel: full config: $OBJ/.config"
	} >&2
	exit 1
fi
say "configured: all $(grep -cE '^(CONFIG_[A-Za-z0-9_]+=|# CONFIG_[A-Za-z0-9_]+ is not set)' "$FRAGMENT") requested options verified"

# [4/5] build
JOBS=${KERNEL_JOBS:-$(nproc)}
ESTIMATE_FILE=$CACHE/kernel/.objects
estimate=$DEFAULT_OBJ_ESTIMATE
[[ -s $ESTIMATE_FILE ]] && estimate=$(<"$ESTIMATE_FILE")
stage 4 "building (${JOBS} jobs), log: $LOG"
TB=$SECONDS
# In its own process group, so an interrupted build.sh stops all of it.
setsid make -C "$SRC_DIR" O="$OBJ" -j"$JOBS" bzImage >>"$LOG" 2>&1 </dev/null &
MAKE_PID=$!
trap 'kill -TERM -- "-$MAKE_PID" 2>/dev/null || true; cleanup' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
count_objs() { find "$OBJ" -name '*.o' -type f 2>/dev/null | wc -l; }
tick=0
while kill -0 "$MAKE_PID" 2>/dev/null; do
	sleep 1
	((++tick % 10 == 0)) || continue
	n=$(count_objs)
	pct=$((n * 100 / estimate))
	((pct > 99)) && pct=99
	last=$(tail -n 200 "$LOG" | grep -E '^  [A-Z0-9_]+ +' | tail -n 1 | sed -E 's/^ +//; s/ +/ /') || true
	printf 'kernel [4/5]   %6s  %4d/~%d objects (%2d%%)  %s\n' "$(fmt_secs $((SECONDS - TB)))" "$n" "$estimate" "$pct" "${last:-}"
done
if wait "$MAKE_PID"; then rc=0; else rc=$?; fi
trap cleanup EXIT
trap - INT TERM
((rc == 0)) || fail_with_log "build failed (make exit $rc)"
count_objs >"$ESTIMATE_FILE"
RELEASE=$(kmake -s --no-print-directory kernelrelease)

# [5/5] install into the cache; bzImage last, it marks a complete entry.
cp -f "$OBJ/vmlinux" "$OUT/vmlinux.tmp" && mv -f "$OUT/vmlinux.tmp" "$OUT/vmlinux"
cp -f "$OBJ/.config" "$OUT/config.tmp" && mv -f "$OUT/config.tmp" "$OUT/config"
printf '%s\n' "$RELEASE" >"$OUT/release.tmp" && mv -f "$OUT/release.tmp" "$OUT/release"
cp -f "$OBJ/arch/x86/boot/bzImage" "$OUT/bzImage.tmp" && mv -f "$OUT/bzImage.tmp" "$OUT/bzImage"
if [[ -z ${MICROVM_KERNEL_KEEP_OBJ:-} ]]; then
	rm -rf "$OBJ"
fi
publish_all
stage 5 "done in $(fmt_secs $((SECONDS - T0))) (compile $(fmt_secs $((SECONDS - TB)))): $RELEASE"
say "  $CACHE/bzImage -> $OUT/bzImage ($(stat -c %s "$OUT/bzImage") bytes)"
say "  $CACHE/vmlinux -> $OUT/vmlinux"
