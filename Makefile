# runbox: make targets. `make` or `make help` lists them; a target shows up
# there through the `## ` comment on its line.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

GO ?= go
# `make bench BENCHTIME=5s BENCHCOUNT=6` for benchstat-worthy runs.
BENCHTIME ?= 20x
BENCHCOUNT ?= 1

# Shipped binaries are static (no cgo): one binary runs in any image.
# runbox-init is also built reproducibly (no paths, build id or VCS stamp),
# exactly as images/build.sh builds it, so its bytes, and the runtime image
# versions hashed from them, change only when its source does.
GOBUILD := CGO_ENABLED=0 $(GO) build -trimpath
INIT_FLAGS := -buildvcs=false -ldflags='-s -w -buildid='

IMAGE_INPUTS := images/build.sh images/base/build.sh images/base/packages.txt \
	images/base/Dockerfile $(wildcard images/runtime/*/Dockerfile)

.PHONY: help images build gui check test test-gui test-short bench chaos cluster cluster-down fmt vet clean clean-images

help: ## list the targets
	@echo 'usage: make TARGET'
	@awk 'BEGIN { FS = ":.*## " } /^[a-z][a-z-]*:.*## / { printf "  %-13s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

# The images live in Docker, not in files, so this target always runs the
# script; the script skips whatever is up to date (a few seconds then).
images: $(IMAGE_INPUTS) ## build the base and sandbox runtime images (first time: minutes, debootstrap)
	GO=$(GO) images/build.sh

build: ## build bin/runbox and bin/runbox-init (static, CGO_ENABLED=0)
	$(GOBUILD) -o bin/runbox ./cmd/runbox
	$(GOBUILD) $(INIT_FLAGS) -o bin/runbox-init ./cmd/runbox-init

# -race needs cgo on linux/amd64 (`-race requires cgo`), so the tests run
# with CGO_ENABLED=1 and a C compiler (.ci/run installs gcc); the shipped
# binaries stay CGO_ENABLED=0. The Docker tests need the images, and in CI
# they must run, not skip: hence the images prerequisite.
# -p 1: one package at a time. The Docker-heavy packages (cmd/runbox's process tests,
# sandbox/docker's conformance in six languages, docs' guides) each load the 2-core
# machine on their own; run side by side they pushed programs past their time limits.
test: check images ## the fast checks, the images, then every test with -race (needs Docker and the GUI's -dev packages)
	CGO_ENABLED=1 $(GO) test -race -count=1 -p 1 -timeout 60m ./...
	$(MAKE) test-gui

# Before every commit, and first in CI (make test runs it): seconds to a couple of
# minutes, no Docker needed. gofmt, go vet and go mod tidy on both modules, then the tests
# that need no daemon with -race.
check: ## fast checks: gofmt, go vet and go mod tidy -diff on both modules, go test -short -race
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [[ -n "$$unformatted" ]]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	$(GO) mod tidy -diff
	CGO_ENABLED=0 $(GO) vet ./...
	cd cmd/runbox-gui && $(GO) mod tidy -diff && CGO_ENABLED=1 $(GO) vet ./...
	CGO_ENABLED=1 $(GO) test -short -race -count=1 ./...

# The GUI is its own module (cgo, OpenGL, X11): see docs/install.md for its Debian
# packages. Its tests are headless (fyne.io/fyne/v2/test) and need no display.
test-gui: ## run the desktop client's headless tests with -race
	cd cmd/runbox-gui && $(GO) mod tidy -diff && CGO_ENABLED=1 $(GO) vet ./... && CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 20m ./...

gui: ## build bin/runbox-gui, the Fyne desktop client (cgo; the first build takes minutes)
	cd cmd/runbox-gui && CGO_ENABLED=1 $(GO) build -o ../../bin/runbox-gui .

test-short: ## run the tests that need no Docker daemon (go test -short)
	$(GO) test -short ./...

# make test runs TestChaos in its short form (one round of each disturbance);
# this is the long one. CHAOS_SEED=N replays a run (the test logs its seed).
chaos: images ## drive a real master and two slaves through hostile programs, floods, a rogue slave, kill -9 and a truncated journal (long form)
	RUNBOX_CHAOS=long RUNBOX_CHAOS_SEED=$(CHAOS_SEED) CGO_ENABLED=1 $(GO) test -race -count=1 -run '^TestChaos$$' -v -timeout 90m ./cmd/runbox/

bench: images ## run the sandbox benchmarks (vars BENCHTIME, default 20x; BENCHCOUNT, default 1)
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) -count $(BENCHCOUNT) ./sandbox/docker/

# Secure by default (TLS, tokens, ports on 127.0.0.1; the client token printed once);
# INSECURE=1 for the plaintext, open cluster. Settings: see deploy/cluster.sh.
cluster: images build ## start a one-machine cluster, secured: the master in a container, slaves spawned under load (INSECURE=1: open)
	deploy/cluster.sh up

cluster-down: ## stop and remove the cluster, slaves and sandboxes included (PURGE=1: its journal and credentials too)
	deploy/cluster.sh down

.PHONY: demo
demo: build gui ## record the demo video docs/demo.webm and docs/images/demo.gif (needs Xvfb, ffmpeg, xterm, xdotool, chromium)
	demo/demo.sh

fmt: ## gofmt every Go file
	$(GO) fmt ./...

vet: ## go vet every package
	$(GO) vet ./...

clean: ## remove build artefacts (bin/); images stay, see clean-images
	rm -rf bin/

clean-images: ## remove every runbox/* image (the next make images bootstraps again)
	@ids=$$(docker images -q --filter 'reference=runbox/*' | sort -u); \
	if [[ -n "$$ids" ]]; then docker rmi -f $$ids; else echo 'no runbox images'; fi
