#!/usr/bin/env bash
# deploy/cluster.sh up|down: the one-machine cluster of `make cluster` / `make cluster-down`.
#
# up:   the master runs in a container of runbox/server on the Docker network "runbox",
#       with its job journal in the volume "runbox-data" and autoscaling on: under load it
#       starts slave containers (runbox-runbox-slave-N) on the same network through the
#       Docker API, and stops them when they idle. Ports 7700 (cluster protocol) and 7780
#       (dashboard, /metrics) are published on this machine.
# down: stops the master (so that nothing starts new slaves), then the slaves, and removes
#       them, their sandbox containers and the network. The journal volume stays (PURGE=1 removes
#       it too).
#
# Settings (environment): RUNBOX_PORT (7700), RUNBOX_HTTP_PORT (7780), RUNBOX_MAX_PROGRAMS
# (2), RUNBOX_MAX_SLAVES (4), RUNBOX_SLAVE_CAPACITY (2), RUNBOX_SLAVE_IDLE (30s),
# RUNBOX_MASTER_ARGS (extra master flags, e.g. the security flags of SECURE=1).
set -euo pipefail

cluster=runbox
net=runbox
volume=runbox-data
master=runbox-master
image=runbox/server:latest
port=${RUNBOX_PORT:-7700}
http=${RUNBOX_HTTP_PORT:-7780}

log() { echo "cluster: $*" >&2; }
die() { echo "cluster: error: $*" >&2; exit 1; }

up() {
	docker image inspect "$image" >/dev/null 2>&1 || die "$image is missing: run make images"
	if docker container inspect "$master" >/dev/null 2>&1; then
		log "replacing the running master (its journal in volume $volume is kept)"
		docker rm -f "$master" >/dev/null
	fi
	# The ports before anything is created: a refusal leaves nothing behind.
	for p in "$port" "$http"; do
		if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			die "port $p is already in use on this machine; free it or choose others: make cluster RUNBOX_PORT=... RUNBOX_HTTP_PORT=..."
		fi
	done
	docker network inspect "$net" >/dev/null 2>&1 || docker network create "$net" >/dev/null
	docker volume inspect "$volume" >/dev/null 2>&1 || docker volume create "$volume" >/dev/null
	# shellcheck disable=SC2086 # RUNBOX_MASTER_ARGS is a list of flags
	docker run -d --name "$master" --network "$net" \
		-p "$port:7700" -p "$http:7780" \
		-v "$volume:/data" -v /var/run/docker.sock:/var/run/docker.sock \
		--label "runbox.cluster=$cluster" --label runbox.role=master \
		--log-opt max-size=10m --log-opt max-file=3 \
		"$image" master --node master --data /data --http :7780 \
		--max-programs "${RUNBOX_MAX_PROGRAMS:-2}" \
		--autoscale docker --cluster "$cluster" --slave-network "$net" --advertise "$master:7700" \
		--max-slaves "${RUNBOX_MAX_SLAVES:-4}" --slave-capacity "${RUNBOX_SLAVE_CAPACITY:-2}" \
		--slave-idle "${RUNBOX_SLAVE_IDLE:-30s}" ${RUNBOX_MASTER_ARGS:-} >/dev/null

	log "waiting for the master to be healthy..."
	for _ in $(seq 1 120); do
		if curl -fsS "http://127.0.0.1:$http/healthz" >/dev/null 2>&1; then
			cat <<MSG

runbox cluster is up.
  cluster protocol   127.0.0.1:$port
  dashboard          http://127.0.0.1:$http/
  metrics            http://127.0.0.1:$http/metrics

Submit a program:    bin/runbox submit --server 127.0.0.1:$port examples/hello.py
Cluster status:      bin/runbox status --server 127.0.0.1:$port
Load (slaves spawn): bin/runbox bench --server 127.0.0.1:$port --clients 20 --jobs 10
Desktop client:      make gui && bin/runbox-gui
Master logs:         docker logs -f $master
Stop everything:     make cluster-down
MSG
			return 0
		fi
		if [[ "$(docker inspect -f '{{.State.Running}}' "$master" 2>/dev/null)" != "true" ]]; then
			docker logs --tail 30 "$master" >&2 || true
			die "the master exited"
		fi
		sleep 0.5
	done
	docker logs --tail 30 "$master" >&2 || true
	die "the master did not become healthy within 60 s"
}

down() {
	# The master first: once it is gone nothing starts new slaves.
	if docker container inspect "$master" >/dev/null 2>&1; then
		log "stopping the master"
		docker stop -t 30 "$master" >/dev/null || true
		docker rm -f "$master" >/dev/null || true
	fi
	slaves=$(docker ps -aq --filter "label=runbox.cluster=$cluster" --filter label=runbox.role=slave)
	if [[ -n "$slaves" ]]; then
		log "stopping slaves"
		# shellcheck disable=SC2086
		docker stop -t 30 $slaves >/dev/null || true
		# shellcheck disable=SC2086
		docker rm -f $slaves >/dev/null || true
	fi
	# Sandboxes of the master and of the slaves (owners runbox-master-7700, runbox-runbox-slave-N),
	# in case one of them was killed before it could remove its own.
	left=$(docker ps -a --filter label=runbox.sandbox=1 --format '{{.ID}} {{.Label "runbox.owner"}}' |
		awk '$2 ~ /^runbox-master(-[0-9]+)?$/ || $2 ~ /^runbox-runbox-slave-/ { print $1 }')
	if [[ -n "$left" ]]; then
		# shellcheck disable=SC2086
		docker rm -f $left >/dev/null || true
	fi
	docker network rm "$net" >/dev/null 2>&1 || true
	if [[ "${PURGE:-0}" == 1 ]]; then
		docker volume rm "$volume" >/dev/null 2>&1 || true
		log "removed the journal volume $volume"
	fi
	log "cluster is down"
}

case "${1:-}" in
up) up ;;
down) down ;;
*) die "usage: deploy/cluster.sh up|down" ;;
esac
