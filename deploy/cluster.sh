#!/usr/bin/env bash
# deploy/cluster.sh up|down|credentials: the one-machine cluster of `make cluster` /
# `make cluster-down`.
#
# up:   the master runs in a container of runbox/server on the Docker network "runbox",
#       with its job journal in the volume "runbox-data" and autoscaling on: under load it
#       starts slave containers (runbox-runbox-slave-N) on the same network through the
#       Docker API, and stops them when they idle. Ports 7700 (cluster protocol) and 7780
#       (dashboard, /metrics) are published on 127.0.0.1 only (RUNBOX_BIND to change it).
#       Secure by default: TLS on the cluster protocol, a client token, a dashboard token
#       (see credentials). INSECURE=1: plaintext and open, for a trusted machine only.
# down: stops the master (so that nothing starts new slaves), then the slaves, and removes
#       them, their sandbox containers and the network. The journal volume and the
#       credentials stay (PURGE=1 removes them too).
# credentials: makes the credentials, once, and writes the client files (up does it too):
#       in the state directory (0700; the master gets only what it needs, read-only):
#         pki/ca.crt, pki/ca.key     the cluster's CA (the key never enters a container)
#         master/                    the master's certificate and key (--tls-dir)
#         tokens                     the tokens file: the client token's hash (--tokens)
#         http-token                 the dashboard's token (--http-token-file)
#         client-token               the client token, for writing the client files again
#       in the client directory (0700, files 0600), read by bin/runbox and bin/runbox-gui:
#         token, ca.crt, http-token
#       The client token is printed once, when it is made.
#
# Settings (environment): RUNBOX_PORT (7700), RUNBOX_HTTP_PORT (7780), RUNBOX_BIND
# (127.0.0.1: the address the ports are published on; 0.0.0.0 for every interface),
# RUNBOX_HOSTS (more names or addresses clients dial the master at, for its certificate),
# RUNBOX_CLUSTER (runbox: names the network, volume, containers and state directory),
# RUNBOX_MASTER_NODE (master, or CLUSTER-master for another cluster), RUNBOX_IMAGE
# (runbox/server:latest), RUNBOX_MAX_PROGRAMS (2), RUNBOX_MAX_SLAVES (4),
# RUNBOX_SLAVE_CAPACITY (2), RUNBOX_SLAVE_IDLE (30s), RUNBOX_MASTER_ARGS (extra master
# flags), RUNBOX_STATE_DIR ($XDG_STATE_HOME/runbox/CLUSTER, else
# ~/.local/state/runbox/CLUSTER), RUNBOX_CONFIG_DIR (the client directory:
# $XDG_CONFIG_HOME/runbox, else ~/.config/runbox), INSECURE (0), PURGE (0).
set -euo pipefail

cluster=${RUNBOX_CLUSTER:-runbox}
net=$cluster
volume=$cluster-data
master=$cluster-master
if [[ $cluster == runbox ]]; then node=${RUNBOX_MASTER_NODE:-master}; else node=${RUNBOX_MASTER_NODE:-$cluster-master}; fi
image=${RUNBOX_IMAGE:-runbox/server:latest}
port=${RUNBOX_PORT:-7700}
http=${RUNBOX_HTTP_PORT:-7780}
bind=${RUNBOX_BIND:-127.0.0.1}
insecure=${INSECURE:-0}
state=${RUNBOX_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/runbox/$cluster}
client=${RUNBOX_CONFIG_DIR:-${XDG_CONFIG_HOME:-$HOME/.config}/runbox}
# Where this machine reaches the published ports.
reach=$bind
[[ $bind == 0.0.0.0 ]] && reach=127.0.0.1

log() { echo "cluster: $*" >&2; }
die() { echo "cluster: error: $*" >&2; exit 1; }

# in_image runs the image's runbox as the calling user, with the state directory at /s.
in_image() {
	docker run --rm --network none --user "$(id -u):$(id -g)" -v "$state:/s" "$image" "$@"
}

# copy_private copies $1 to $2 with mode 0600, replacing it only when it differs.
copy_private() {
	if ! cmp -s "$1" "$2"; then
		(umask 077 && cp "$1" "$2.tmp" && chmod 600 "$2.tmp" && mv -f "$2.tmp" "$2")
	fi
}

# credentials makes what is missing of the state directory, and writes the client files.
credentials() {
	docker image inspect "$image" >/dev/null 2>&1 || die "$image is missing: run make images"
	mkdir -p "$state" && chmod 700 "$state"
	if [[ ! -f $state/pki/ca.crt ]]; then
		in_image certs init --dir /s/pki --name "runbox $cluster CA" >/dev/null
		log "made the cluster's CA in $state/pki"
	fi
	# The master's certificate names what clients and slaves dial: the container's name on
	# the cluster network, localhost and 127.0.0.1 always, the published address, RUNBOX_HOSTS.
	hosts=$master
	[[ $bind != 0.0.0.0 && $bind != 127.0.0.1 ]] && hosts+=",$bind"
	[[ -n ${RUNBOX_HOSTS:-} ]] && hosts+=",$RUNBOX_HOSTS"
	if [[ ! -f $state/master/tls.crt || "$(cat "$state/master.hosts" 2>/dev/null)" != "$hosts" ]]; then
		rm -rf "$state/master"
		in_image certs issue --dir /s/pki --role master --name master --host "$hosts" --out /s/master >/dev/null
		echo "$hosts" >"$state/master.hosts"
		log "issued the master's certificate for $hosts, localhost, 127.0.0.1"
	fi
	if [[ ! -f $state/http-token ]]; then
		in_image certs token --name dashboard | tail -n 1 | (umask 077 && cat >"$state/http-token")
	fi
	new_token=""
	if [[ ! -s $state/client-token ]] ||
		! grep -q "^client $(tr -d '[:space:]' <"$state/client-token" | sha256sum | cut -d' ' -f1)\b" "$state/tokens" 2>/dev/null; then
		(umask 077 && touch "$state/tokens")
		sed -i '/^client /d' "$state/tokens"
		new_token=$(in_image certs token --name client --tokens /s/tokens 2>/dev/null)
		[[ $new_token == rbx_* ]] || die "could not make the client token"
		(umask 077 && printf '%s\n' "$new_token" >"$state/client-token")
	fi
	mkdir -p "$client" && chmod 700 "$client"
	copy_private "$state/client-token" "$client/token"
	copy_private "$state/pki/ca.crt" "$client/ca.crt"
	copy_private "$state/http-token" "$client/http-token"
	if [[ -n $new_token ]]; then
		cat <<MSG
The client token of cluster $cluster, shown this once (bin/runbox and bin/runbox-gui read
it from $client/token; give it to other users as --token or \$RUNBOX_TOKEN):
  $new_token
MSG
	fi
}

# forget_client_files removes the client files that are copies of this cluster's, so that
# the CLI does not speak TLS to a plaintext master (INSECURE=1) or keep a purged token.
forget_client_files() {
	local f
	for f in token:client-token ca.crt:pki/ca.crt http-token:http-token; do
		if [[ -f $client/${f%%:*} ]] && cmp -s "$client/${f%%:*}" "$state/${f#*:}"; then
			rm -f "$client/${f%%:*}"
		fi
	done
}

up() {
	docker image inspect "$image" >/dev/null 2>&1 || die "$image is missing: run make images"
	if docker container inspect "$master" >/dev/null 2>&1; then
		log "replacing the running master (its journal in volume $volume is kept)"
		docker rm -f "$master" >/dev/null
	fi
	# The ports before anything is created: a refusal leaves nothing behind.
	for p in "$port" "$http"; do
		if (exec 3<>"/dev/tcp/$reach/$p") 2>/dev/null; then
			die "port $p is already in use on $reach; free it or choose others: make cluster RUNBOX_PORT=... RUNBOX_HTTP_PORT=..."
		fi
	done
	security=()
	if [[ $insecure == 1 ]]; then
		forget_client_files
		cat >&2 <<MSG
cluster: WARNING: INSECURE=1: no TLS, no tokens. Anyone who reaches $bind:$port may run
cluster: programs, join as a slave and receive every job; the dashboard is open; the
cluster: traffic is in clear. Use it on a machine you alone use, never on a network.
MSG
	else
		credentials
		security=(-v "$state/master:/run/runbox/master:ro" -v "$state/tokens:/run/runbox/tokens:ro"
			-v "$state/http-token:/run/runbox/http-token:ro")
		flags=(--tls-dir /run/runbox/master --tokens /run/runbox/tokens --http-token-file /run/runbox/http-token)
	fi
	docker network inspect "$net" >/dev/null 2>&1 || docker network create "$net" >/dev/null
	docker volume inspect "$volume" >/dev/null 2>&1 || docker volume create "$volume" >/dev/null
	# --http :7780: inside the container, where the published port reaches it (the
	# master's own default is loopback only). The ports are published on $bind.
	# shellcheck disable=SC2086 # RUNBOX_MASTER_ARGS is a list of flags
	docker run -d --name "$master" --network "$net" \
		-p "$bind:$port:7700" -p "$bind:$http:7780" \
		-v "$volume:/data" -v /var/run/docker.sock:/var/run/docker.sock ${security[@]+"${security[@]}"} \
		--label "runbox.cluster=$cluster" --label runbox.role=master \
		--log-opt max-size=10m --log-opt max-file=3 \
		"$image" master --node "$node" --data /data --http :7780 \
		--max-programs "${RUNBOX_MAX_PROGRAMS:-2}" \
		--autoscale docker --cluster "$cluster" --slave-network "$net" --advertise "$master:7700" \
		--slave-image "$image" \
		--max-slaves "${RUNBOX_MAX_SLAVES:-4}" --slave-capacity "${RUNBOX_SLAVE_CAPACITY:-2}" \
		--slave-idle "${RUNBOX_SLAVE_IDLE:-30s}" ${flags[@]+"${flags[@]}"} ${RUNBOX_MASTER_ARGS:-} >/dev/null

	log "waiting for the master to be healthy..."
	server=""
	[[ $reach != 127.0.0.1 || $port != 7700 ]] && server=" --server $reach:$port"
	for _ in $(seq 1 120); do
		# /healthz needs no token, with or without the dashboard's.
		if curl -fsS -o /dev/null "http://$reach:$http/healthz" 2>/dev/null; then
			if [[ $insecure == 1 ]]; then
				mode="OPEN (INSECURE=1): no TLS, no tokens"
				files="none (INSECURE=1)"
			else
				mode="TLS, client token"
				files="$client/{token,ca.crt,http-token}"
			fi
			cat <<MSG

runbox cluster is up: $mode.
  cluster protocol   $reach:$port
  dashboard          http://$reach:$http/
  metrics            http://$reach:$http/metrics
  client files       $files
  credentials        $([[ $insecure == 1 ]] && echo none || echo "$state")

Submit a program:    bin/runbox submit$server examples/hello.py
Cluster status:      bin/runbox status$server
Load (slaves spawn): bin/runbox bench$server --clients 20 --jobs 4 --program examples/wait.py
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
		# -v: a slave's CA certificate is in an anonymous volume.
		# shellcheck disable=SC2086
		docker rm -f -v $slaves >/dev/null || true
	fi
	# Sandboxes of the master and of the slaves (owners runbox-NODE-7700, runbox-CLUSTER-slave-N),
	# in case one of them was killed before it could remove its own.
	left=$(docker ps -a --filter label=runbox.sandbox=1 --format '{{.ID}} {{.Label "runbox.owner"}}' |
		awk -v m="runbox-$node" -v s="runbox-$cluster-slave-" '$2 == m || $2 ~ "^" m "-[0-9]+$" || index($2, s) == 1 { print $1 }')
	if [[ -n "$left" ]]; then
		# shellcheck disable=SC2086
		docker rm -f $left >/dev/null || true
	fi
	docker network rm "$net" >/dev/null 2>&1 || true
	if [[ "${PURGE:-0}" == 1 ]]; then
		docker volume rm "$volume" >/dev/null 2>&1 || true
		log "removed the journal volume $volume"
		if [[ -d $state ]]; then
			forget_client_files
			rm -rf "$state"
			log "removed the credentials ($state) and their copies in $client"
		fi
	fi
	log "cluster is down"
}

case "${1:-}" in
up) up ;;
down) down ;;
credentials)
	credentials
	echo "RUNBOX_STATE_DIR=$state"
	echo "client files: $client/token, $client/ca.crt, $client/http-token"
	;;
*) die "usage: deploy/cluster.sh up|down|credentials" ;;
esac
