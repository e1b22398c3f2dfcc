#!/usr/bin/env bash
# The rules the project's scripts share, defined once. Scripts source it:
#
#	source "$ROOT/scripts/lib.sh"
#
# which sets CACHE (and exports it as MICROVM_CACHE, so that every child
# uses the same one) and defines as_root and apt_install. The Makefile runs
# it as `scripts/lib.sh cache-dir` to print the cache directory.

# microvm_cache_dir prints where built kernels, initrds and the L1 QEMU are
# kept: $MICROVM_CACHE, else $XDG_CACHE_HOME/microvm, else ~/.cache/microvm.
# (cmd/microvm finds its default --kernel and --initrd by the same rule.)
microvm_cache_dir() {
	echo "${MICROVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/microvm}"
}

# as_root CMD...: runs CMD as root: directly when this is root (or there is
# no sudo, and CMD gets to say what it lacks), else through sudo.
as_root() {
	if ((EUID != 0)) && command -v sudo >/dev/null; then
		sudo "$@"
	else
		"$@"
	fi
}

# apt_install PKG...: installs Debian packages, as root, running apt-get
# update once if the install fails (stale or never fetched package lists).
# Quiet but for that retry; callers say what they install and why.
apt_install() {
	local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -q)
	as_root "${apt[@]}" install -y --no-install-recommends "$@" >/dev/null && return
	echo "${0##*/}: apt-get install $* failed; running apt-get update once and retrying" >&2
	as_root "${apt[@]}" update >/dev/null
	as_root "${apt[@]}" install -y --no-install-recommends "$@" >/dev/null
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	case ${1:-} in
	cache-dir) microvm_cache_dir ;;
	*)
		echo "usage: $0 cache-dir (or source it from a bash script)" >&2
		exit 2
		;;
	esac
else
	CACHE=$(microvm_cache_dir)
	export MICROVM_CACHE=$CACHE
fi
