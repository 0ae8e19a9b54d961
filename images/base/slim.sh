#!/bin/sh
# images/base/slim.sh ROOT: strips from the Debian tree at ROOT what a sandbox
# never uses. Run by images/base/build.sh on the debootstrap tree, and inside
# the Dockerfile (ROOT=/) when the base is built from debian:bookworm-slim.
#
# What goes, besides documentation and package caches:
# - lto-dump and lto1 (~64 MB): link-time optimisation; `-flto` is not
#   supported in the sandbox, plain compiles never run them;
# - the sanitizer runtimes (asan, tsan, lsan, ubsan, hwasan; ~25 MB):
#   `-fsanitize=...` is not supported either (ASan's shadow memory does not fit
#   the sandbox's memory caps anyway);
# - Go: the compiled packages and sources of the go tools themselves
#   (pkg/*/cmd, src/cmd; ~190 MB), the standard library's tests and test data,
#   the profilers (pprof, trace) and the API checker: `go build` of a program
#   needs none of them, and the standard library stays up to date (not stale);
# - Java: the JMOD files (~75 MB), read only by jlink, and the manual pages.
set -eu

root=${1:?usage: slim.sh ROOT}
[ -d "$root/usr" ] || { echo "slim.sh: $root is not a root filesystem" >&2; exit 1; }
cd "$root"

# Documentation, manuals, translations.
rm -rf usr/share/doc/* usr/share/man/* usr/share/info/* usr/share/locale/* usr/share/lintian
# Downloaded .deb files, apt's package lists, old debconf state, logs.
rm -rf var/lib/apt/lists/* var/cache/apt/* var/cache/debconf/*-old var/log/*
# Unused parts of the toolchain (see above).
rm -f usr/bin/*lto-dump* usr/lib/gcc/*-linux-gnu/*/lto1 \
	usr/lib/*-linux-gnu/lib*san.so.* \
	usr/lib/gcc/*-linux-gnu/*/lib*san.a \
	usr/lib/gcc/*-linux-gnu/*/lib*san.so \
	usr/lib/gcc/*-linux-gnu/*/lib*san_preinit.o
# Go (see above). GOROOT is /usr/lib/go-<V>; its src and test link into /usr/share.
for goroot in usr/lib/go-*; do
	[ -d "$goroot" ] || continue
	share=usr/share/$(basename "$goroot")
	rm -rf "$goroot"/pkg/*_*/cmd "$share"/src/cmd "$share"/test \
		"$goroot"/pkg/tool/*/pprof "$goroot"/pkg/tool/*/trace "$goroot"/pkg/tool/*/api
	find "$share"/src -depth \( -name testdata -type d -exec rm -rf {} + \) -o \( -name '*_test.go' -type f -delete \)
done
# Java (see above).
rm -rf usr/lib/jvm/*/jmods usr/lib/jvm/*/man
