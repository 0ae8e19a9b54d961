#!/usr/bin/env bash
# images/base/build.sh builds the runbox base image: Debian bookworm with the
# toolchains of every sandbox language (images/base/packages.txt). The runtime
# images (images/runtime/<lang>) are thin layers on top of it.
#
# Result: runbox/base:<V> and runbox/base:latest, where V is the first 12 hex
# digits of the sha256 over the build inputs (this script, packages.txt,
# slim.sh and the Dockerfile). The image carries the label runbox.version=<V>.
#
# Two ways to get a Debian root filesystem:
#   1. docker pull debian:bookworm-slim works (or the image is already local):
#      docker build with images/base/Dockerfile, which apt-get installs the
#      packages.
#   2. No registry reachable (our machines): debootstrap a minimal bookworm
#      into a temporary directory with the packages, strip docs, caches and
#      unused toolchain parts (slim.sh), and docker import the tree. This
#      takes a few minutes.
#
# Usage:
#   images/base/build.sh              build if missing, tag :latest
#   images/base/build.sh --print-tag  print runbox/base:<V> and exit
#
# Environment:
#   RUNBOX_BASE_METHOD=auto|pull|debootstrap  force a way (default auto)
#
# Idempotent: when runbox/base:<V> exists, it only re-points :latest at it.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=runbox/base
suite=bookworm

log() { echo "images: $*" >&2; }
die() { echo "images: error: $*" >&2; exit 1; }

# Build inputs. Hash relative names so that the version does not depend on
# where the repository is checked out.
version=$(cd "$here" && sha256sum build.sh packages.txt slim.sh Dockerfile | sha256sum | cut -c1-12)
tag="$repo:$version"

if [[ "${1:-}" == "--print-tag" ]]; then
	echo "$tag"
	exit 0
fi
[[ $# -eq 0 ]] || die "usage: $0 [--print-tag]"

if docker image inspect "$tag" >/dev/null 2>&1; then
	docker tag "$tag" "$repo:latest"
	log "$tag is up to date"
	echo "$tag"
	exit 0
fi

# The package list without comments and blank lines, one name per line.
packages() { sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "$here/packages.txt"; }

# ---------------------------------------------------------------------------
# Way 1: from debian:bookworm-slim, where a registry is reachable.
# ---------------------------------------------------------------------------
build_from_pull() {
	log "building $tag from debian:$suite-slim"
	DOCKER_BUILDKIT=0 docker build \
		--build-arg "VERSION=$version" \
		--build-arg "PACKAGES=$(packages | tr '\n' ' ')" \
		-t "$tag" "$here" >&2
}

# ---------------------------------------------------------------------------
# Way 2: debootstrap into a temporary directory and docker import it.
# ---------------------------------------------------------------------------
need_debootstrap() {
	command -v debootstrap >/dev/null 2>&1 && return 0
	if [[ -r /etc/debian_version ]] && command -v apt-get >/dev/null 2>&1; then
		log "installing debootstrap with apt-get"
		[[ $(id -u) -eq 0 ]] || die "debootstrap is missing; run as root or: apt-get install debootstrap"
		apt-get update -qq >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2
	else
		die "debootstrap is missing and this is not a Debian system; install debootstrap (or make debian:$suite-slim pullable) and retry"
	fi
}

# remove_tree DIR deletes a debootstrap tree. debootstrap mounts /proc (and
# may mount /sys or bind /dev) inside its target, and an interrupted run can
# leave them mounted: unmount everything below DIR, deepest first, before
# deleting it, and never cross into another filesystem while deleting.
remove_tree() {
	[[ -d "$1" ]] || return 0
	awk -v d="$1" 'index($2, d "/") == 1 { print $2 }' /proc/mounts |
		sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
	rm -rf --one-file-system "$1"
}

workdir=""
cleanup() { [[ -z "$workdir" ]] || remove_tree "$workdir"; }
trap cleanup EXIT
trap 'exit 130' INT # so that the EXIT trap runs on Ctrl-C and kill too
trap 'exit 143' TERM

build_from_debootstrap() {
	[[ $(id -u) -eq 0 ]] || die "debootstrap needs root"
	need_debootstrap
	workdir=$(mktemp -d /var/tmp/runbox-base.XXXXXX)
	local root="$workdir/rootfs" start=$SECONDS include
	include=$(packages | paste -sd, -)

	log "bootstrapping base with debootstrap (several minutes)..."
	log "  suite $suite, variant minbase, packages $include"
	# No mirror argument: debootstrap uses its default Debian mirror.
	# Its log goes to a file; on failure we show the tail of it. One retry
	# from scratch, for a transient mirror failure.
	local attempt
	for attempt in 1 2; do
		if debootstrap --variant=minbase --include="$include" "$suite" "$root" \
			>"$workdir/debootstrap.log" 2>&1; then
			break
		fi
		tail -n 30 "$workdir/debootstrap.log" >&2
		if [[ -f "$root/debootstrap/debootstrap.log" ]]; then
			tail -n 30 "$root/debootstrap/debootstrap.log" >&2
		fi
		[[ $attempt -lt 2 ]] || die "debootstrap failed twice"
		log "  debootstrap failed; retrying once"
		remove_tree "$root"
	done
	log "  debootstrap done in $((SECONDS - start))s"

	# Strip what a sandbox never needs: documentation, translations, the
	# downloaded .deb files, apt's lists, unused toolchain parts (slim.sh).
	sh "$here/slim.sh" "$root"
	rm -rf "$root/debootstrap"
	# The host's resolver config and name were copied in; Docker supplies its
	# own at run time (and a sandbox has no network anyway).
	: >"$root/etc/resolv.conf"
	echo runbox >"$root/etc/hostname"

	# Check the toolchains before importing.
	chroot "$root" /usr/bin/python3 --version >&2
	chroot "$root" /usr/bin/gcc --version | sed -n 1p >&2
	chroot "$root" /usr/bin/g++ --version | sed -n 1p >&2
	chroot "$root" /usr/bin/go version >&2
	chroot "$root" /usr/bin/node --version >&2
	# The JVM's launchers find their libraries through /proc/self/exe.
	mount -t proc proc "$root/proc"
	chroot "$root" /usr/bin/javac -version >&2
	chroot "$root" /usr/bin/java -version 2>&1 | sed -n 1p >&2
	umount "$root/proc"

	log "  importing rootfs ($(du -sh --one-file-system "$root" | cut -f1)) as $tag"
	# /dev, /proc and /sys are filled by the container runtime: ship them empty.
	tar --numeric-owner --one-file-system -C "$root" \
		--exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -c . |
		docker import \
			--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
			--change 'ENV LANG=C.UTF-8' \
			--change "LABEL runbox.version=$version" \
			--change 'LABEL runbox.base.source=debootstrap' \
			--change 'CMD ["/bin/bash"]' \
			- "$tag" >/dev/null
	log "  base built in $((SECONDS - start))s"
}

method=${RUNBOX_BASE_METHOD:-auto}
case "$method" in
auto)
	if docker image inspect "debian:$suite-slim" >/dev/null 2>&1 ||
		timeout 120 docker pull "debian:$suite-slim" >/dev/null 2>&1; then
		build_from_pull
	else
		log "debian:$suite-slim cannot be pulled (no registry): using debootstrap"
		build_from_debootstrap
	fi
	;;
pull)
	timeout 120 docker pull "debian:$suite-slim" >&2 || die "cannot pull debian:$suite-slim"
	build_from_pull
	;;
debootstrap) build_from_debootstrap ;;
*) die "RUNBOX_BASE_METHOD must be auto, pull or debootstrap, not $method" ;;
esac

docker tag "$tag" "$repo:latest"
log "built $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{ printf "%.0f MB", $1 / 1e6 }'))"
echo "$tag"
