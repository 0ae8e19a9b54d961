#!/usr/bin/env bash
# images/build.sh builds every runbox image (`make images` calls it):
#
#   bin/runbox-init            the static in-container init
#   runbox/base:<V>            Debian bookworm + toolchains (images/base/build.sh)
#   runbox/runtime-<lang>:<V>  base + runbox-init, one per images/runtime/<lang>
#
# and tags each also :latest. A runtime's V is the first 12 hex digits of the
# sha256 over its Dockerfile, the runbox-init binary and the base image id, so
# an image is rebuilt exactly when one of those changed; otherwise it is only
# re-tagged, and a second run takes a few seconds.
#
# Usage: images/build.sh [lang...]   (default: every images/runtime/*/)
#
# Environment:
#   RUNBOX_INIT_BIN=path   use this prebuilt runbox-init instead of building
#                          ./cmd/runbox-init (must be static: the images
#                          carry no Go runtime)
#   RUNBOX_BASE_METHOD     passed to images/base/build.sh (auto|pull|debootstrap)
#   GO                     the go command (default: go)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."  # repository root

log() { echo "images: $*" >&2; }
die() { echo "images: error: $*" >&2; exit 1; }

docker info >/dev/null 2>&1 || die "cannot reach the Docker daemon (docker info failed)"

# 1. runbox-init, first: a compile error shows in seconds, not after the
# base bootstrap. Built reproducibly (no paths, no build id, no VCS stamp) so
# that the same source gives the same bytes and so the same image versions;
# -s -w drops the symbol table and DWARF (stack traces still work).
if [[ -n "${RUNBOX_INIT_BIN:-}" ]]; then
	init=$RUNBOX_INIT_BIN
	[[ -f "$init" ]] || die "RUNBOX_INIT_BIN=$init does not exist"
	log "using prebuilt runbox-init $init"
else
	init=bin/runbox-init
	CGO_ENABLED=0 "${GO:-go}" build -trimpath -buildvcs=false -ldflags='-s -w -buildid=' \
		-o "$init" ./cmd/runbox-init
fi

# 2. The base image (quick when it exists already). The script logs to
# stderr and prints only the tag, runbox/base:<V>, on stdout.
base=$(images/base/build.sh)
base_id=$(docker image inspect -f '{{.Id}}' "$base")

# 3. One runtime image per language.
if [[ $# -gt 0 ]]; then
	langs=("$@")
else
	langs=()
	for d in images/runtime/*/; do langs+=("$(basename "$d")"); done
fi

tmp=""
trap '[[ -z "$tmp" ]] || rm -rf "$tmp"' EXIT

for lang in "${langs[@]}"; do
	dockerfile=images/runtime/$lang/Dockerfile
	[[ -f "$dockerfile" ]] || die "no $dockerfile"
	repo=runbox/runtime-$lang
	version=$({ sha256sum <"$dockerfile"; sha256sum <"$init"; echo "$base_id"; } | sha256sum | cut -c1-12)
	tag=$repo:$version

	if docker image inspect "$tag" >/dev/null 2>&1; then
		log "$tag is up to date"
	else
		log "building $tag on $base"
		# A minimal build context: the Dockerfile and the binary, nothing else.
		tmp=$(mktemp -d)
		ctx=$tmp/context
		mkdir "$ctx"
		cp "$dockerfile" "$ctx/Dockerfile"
		install -m 0755 "$init" "$ctx/runbox-init"
		# The legacy builder: it builds offline from a local FROM image, and
		# needs no buildx plugin (which our Docker client lacks).
		# Its output is kept in a file and shown only when the build fails.
		if ! DOCKER_BUILDKIT=0 docker build \
			--build-arg "BASE=$base" \
			--build-arg "VERSION=$version" \
			-t "$tag" "$ctx" >"$tmp/build.log" 2>&1; then
			cat "$tmp/build.log" >&2
			die "docker build of $tag failed"
		fi
		rm -rf "$tmp"
		tmp=""
	fi
	docker tag "$tag" "$repo:latest"
done

# The server image: the static runbox binary on scratch (master and slaves). Skipped
# when only some languages were asked for.
server=""
if [[ $# -eq 0 ]]; then
	bin=bin/runbox
	CGO_ENABLED=0 "${GO:-go}" build -trimpath -buildvcs=false -ldflags='-s -w -buildid=' -o "$bin" ./cmd/runbox
	dockerfile=images/server/Dockerfile
	version=$({ sha256sum <"$dockerfile"; sha256sum <"$bin"; } | sha256sum | cut -c1-12)
	server=runbox/server:$version
	if docker image inspect "$server" >/dev/null 2>&1; then
		log "$server is up to date"
	else
		log "building $server"
		tmp=$(mktemp -d)
		cp "$dockerfile" "$tmp/Dockerfile"
		install -m 0755 "$bin" "$tmp/runbox"
		if ! DOCKER_BUILDKIT=0 docker build --build-arg "VERSION=$version" -t "$server" "$tmp" >"$tmp/build.log" 2>&1; then
			cat "$tmp/build.log" >&2
			die "docker build of $server failed"
		fi
		rm -rf "$tmp"
		tmp=""
	fi
	docker tag "$server" runbox/server:latest
fi

log "ready: $base $(for l in "${langs[@]}"; do printf 'runbox/runtime-%s ' "$l"; done)$server"
