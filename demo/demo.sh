#!/usr/bin/env bash
# demo/demo.sh: the scripted demonstration behind `make demo` (see docs/demo.md).
#
# It starts a one-machine cluster (deploy/cluster.sh, on free ports), a virtual X display
# (Xvfb), and records that display with ffmpeg while it
#   1. shows the cluster starting, in a terminal window (xterm),
#   2. opens the dashboard in a browser window (chromium --app),
#   3. opens two desktop clients (bin/runbox-gui) side by side, each sending a program
#      from examples/ at once,
#   4. drives load with `runbox bench` so that the master spawns slaves (watch the
#      dashboard), then lets them idle and retire,
#   5. sends the two programs again from the clients, and tears everything down.
# The recording becomes docs/demo.webm (VP9) and a 10 s excerpt docs/images/demo.gif.
#
# Whatever happens (error, Ctrl-C), the trap stops the browser, the clients, the terminal,
# ffmpeg and Xvfb, and brings the cluster down (deploy/cluster.sh down).
#
# Settings (environment): RUNBOX_PORT (17750), RUNBOX_HTTP_PORT (17751), DEMO_DISPLAY (:77),
# DEMO_OUT (docs/demo.webm), DEMO_GIF (docs/images/demo.gif), DEMO_GIF_START (seconds into
# the video where the GIF excerpt starts, 55), DEMO_FPS (8).
# Needs: docker, the images (make images), bin/runbox (make build), bin/runbox-gui (make gui),
# and the Debian packages xvfb ffmpeg xterm xdotool chromium.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD

export RUNBOX_PORT=${RUNBOX_PORT:-17750}
export RUNBOX_HTTP_PORT=${RUNBOX_HTTP_PORT:-17751}
# Slaves retire after 10 s idle, so the video shows them leave as well as arrive.
export RUNBOX_SLAVE_IDLE=${RUNBOX_SLAVE_IDLE:-10s}
# The load below is CPU-bound on one machine, where slaves only share the master's cores:
# the autoscaler would not start them (--scale-headroom); the demo shows the mechanism.
export RUNBOX_MASTER_ARGS=${RUNBOX_MASTER_ARGS:---scale-headroom 0}
display=${DEMO_DISPLAY:-:77}
out=${DEMO_OUT:-docs/demo.webm}
gif=${DEMO_GIF:-docs/images/demo.gif}
gif_start=${DEMO_GIF_START:-55}
fps=${DEMO_FPS:-8}
server=127.0.0.1:$RUNBOX_PORT
dash=http://127.0.0.1:$RUNBOX_HTTP_PORT/

log() { echo "demo: $*" >&2; }
die() { echo "demo: error: $*" >&2; exit 1; }

for cmd in docker Xvfb ffmpeg xterm xdotool chromium curl; do
	command -v "$cmd" >/dev/null || die "$cmd is missing (apt-get install xvfb ffmpeg xterm xdotool chromium curl)"
done
[[ -x bin/runbox ]] || die "bin/runbox is missing: make build"
[[ -x bin/runbox-gui ]] || die "bin/runbox-gui is missing: make gui"
# deploy/cluster.sh names its master runbox-master whatever the ports: do not replace a running one.
if docker container inspect runbox-master >/dev/null 2>&1; then
	die "a cluster is already up (container runbox-master): make cluster-down first"
fi
[[ -e /tmp/.X${display#:}-lock ]] && die "display $display is in use (DEMO_DISPLAY=:N picks another)"

work=$(mktemp -d /tmp/runbox-demo.XXXXXX)
raw=$work/raw.mkv
term=$work/terminal.log # what the xterm shows (tail -f)
: >"$term"
pids=()        # processes started here, stopped by the trap (newest first)
ffmpeg_pid=''
xvfb_pid=''
cluster_up=0

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	set +e
	# The windows first (each in its own process group, chromium has many children)...
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
		kill -TERM -- "-${pids[i]}" 2>/dev/null || kill -TERM "${pids[i]}" 2>/dev/null
	done
	# ...ffmpeg gets a 'q'-like SIGINT so that it closes the file properly...
	if [[ -n $ffmpeg_pid ]]; then
		kill -INT "$ffmpeg_pid" 2>/dev/null
		for _ in $(seq 1 50); do kill -0 "$ffmpeg_pid" 2>/dev/null || break; sleep 0.2; done
		kill -KILL "$ffmpeg_pid" 2>/dev/null
	fi
	sleep 0.5
	for p in "${pids[@]}"; do kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null; done
	if [[ -n $xvfb_pid ]]; then
		kill -TERM "$xvfb_pid" 2>/dev/null
		wait "$xvfb_pid" 2>/dev/null
	fi
	if ((cluster_up)); then
		log "tearing the cluster down"
		deploy/cluster.sh down
	fi
	[[ ${DEMO_KEEP:-0} == 1 ]] || rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# say prints a caption line in the terminal window.
say() { printf '\n\033[1;34m### %s\033[0m\n' "$*" >>"$term"; log "$*"; }
# show runs a command with its output in the terminal window, prompt included.
show() {
	printf '\033[1;32m$\033[0m %s\n' "$*" >>"$term"
	"$@" >>"$term" 2>&1
}

# status shows `runbox status` without its list of recent jobs (long after the bench).
status() {
	printf '\033[1;32m$\033[0m %s\n' "bin/runbox status --server $server" >>"$term"
	bin/runbox status --server "$server" 2>&1 | awk '/^RECENT/ { exit } { print }' >>"$term" || true
}

# thin copies its input line by line as it comes (mawk would buffer it), keeping one
# bench progress line in three.
thin() {
	local line n=0 re='^runbox bench: [0-9]+/[0-9]+ jobs'
	while IFS= read -r line; do
		if [[ $line =~ $re ]]; then
			((n++ % 3 == 0)) || continue
		fi
		printf '%s\n' "$line"
	done
}

# spawn CMD...: starts CMD in its own process group (setsid), remembered for the trap.
spawn() {
	setsid "$@" >>"$work/windows.log" 2>&1 &
	pids+=("$!")
}

# place PID X Y W H: moves and resizes the first window of process PID (no window
# manager on Xvfb: xdotool sets the geometry directly).
place() {
	local pid=$1 x=$2 y=$3 w=$4 h=$5 win=''
	for _ in $(seq 1 120); do
		win=$(xdotool search --onlyvisible --pid "$pid" 2>/dev/null | head -1) && [[ -n $win ]] && break
		sleep 0.5
	done
	[[ -n $win ]] || { log "no window for pid $pid"; return 0; }
	xdotool windowsize "$win" "$w" "$h" windowmove "$win" "$x" "$y"
}

log "building the images if needed (make images)"
make -s images >/dev/null

log "starting Xvfb on $display"
Xvfb "$display" -screen 0 1280x800x24 -nolisten tcp >"$work/xvfb.log" 2>&1 &
xvfb_pid=$!
export DISPLAY=$display
for _ in $(seq 1 50); do xdpyinfo >/dev/null 2>&1 && break; sleep 0.2; done 2>/dev/null || true
sleep 1
kill -0 "$xvfb_pid" 2>/dev/null || die "Xvfb did not start: $(cat "$work/xvfb.log")"
# A dark background rather than Xvfb's default grey weave.
xsetroot -solid '#20242b' 2>/dev/null || true

# Layout of the 1280x800 screen:
#   top:    two desktop clients, 640x430 each
#   bottom: the terminal (left, 560x370) and the dashboard (right, 720x370)
spawn xterm -geometry 92x27+0+430 -fa 'DejaVu Sans Mono' -fs 8 -bg '#1b1e24' -fg '#d8dee9' \
	-T 'runbox demo: terminal' -e tail -n +1 -f "$term"
xterm_pid=${pids[-1]}
place "$xterm_pid" 0 430 560 370

log "recording $display into $raw"
nice -n 5 ffmpeg -nostdin -loglevel error -f x11grab -video_size 1280x800 -framerate "$fps" \
	-draw_mouse 0 -i "$display" -c:v libx264 -preset ultrafast -qp 0 "$raw" \
	>"$work/ffmpeg.log" 2>&1 &
ffmpeg_pid=$!

say "runbox demo: one master, slaves spawned under load, two desktop clients"
sleep 2
say "1. Start a one-machine cluster (make cluster), here on ports $RUNBOX_PORT/$RUNBOX_HTTP_PORT"
cluster_up=1
show deploy/cluster.sh up || die "the cluster did not start (see $term)"
sleep 1

say "2. The dashboard: $dash"
spawn chromium --no-sandbox --test-type --disable-gpu --no-first-run --no-default-browser-check \
	--disable-dev-shm-usage --user-data-dir="$work/chromium" \
	--force-device-scale-factor=0.7 --window-position=560,430 --window-size=720,370 --app="$dash"
place "${pids[-1]}" 560 430 720 370
sleep 4

say "3. Two desktop clients send programs from examples/"
printf '\033[1;32m$\033[0m %s\n' "bin/runbox-gui -server $server -run examples/hello.py" >>"$term"
spawn env FYNE_SCALE=0.62 bin/runbox-gui -server "$server" -run examples/hello.py
gui1=${pids[-1]}
printf '\033[1;32m$\033[0m %s\n' "bin/runbox-gui -server $server -run examples/hello.c" >>"$term"
spawn env FYNE_SCALE=0.62 bin/runbox-gui -server "$server" -run examples/hello.c
gui2=${pids[-1]}
place "$gui1" 0 0 640 430
place "$gui2" 640 0 640 430
sleep 10

say "4. Load: 10 clients x 6 jobs of examples/primes.py; the master spawns slaves"
status
# The progress line comes every 2 s; the terminal shows one in three.
printf '\033[1;32m$\033[0m %s\n' "bin/runbox bench --server $server --clients 10 --jobs 6 --program examples/primes.py" >>"$term"
bin/runbox bench --server "$server" --clients 10 --jobs 6 --program examples/primes.py 2>&1 |
	thin >>"$term" || true
status

say "5. Idle again: the slaves retire after $RUNBOX_SLAVE_IDLE without work"
# Meanwhile two new clients send two other programs: one that computes, one that fails to compile.
sleep 8
for g in "$gui1" "$gui2"; do kill -TERM -- "-$g" 2>/dev/null || true; done
printf '\033[1;32m$\033[0m %s\n' "bin/runbox-gui -server $server -run examples/primes.py" >>"$term"
spawn env FYNE_SCALE=0.62 bin/runbox-gui -server "$server" -run examples/primes.py
gui1=${pids[-1]}
printf '\033[1;32m$\033[0m %s\n' "bin/runbox-gui -server $server -run examples/broken.c" >>"$term"
spawn env FYNE_SCALE=0.62 bin/runbox-gui -server "$server" -run examples/broken.c
gui2=${pids[-1]}
place "$gui1" 0 0 640 430
place "$gui2" 640 0 640 430
sleep 25
status
sleep 4

say "6. Tear down: make cluster-down"
sleep 3
# Stop the recording before the teardown (the trap would do it too).
kill -INT "$ffmpeg_pid" 2>/dev/null || true
wait "$ffmpeg_pid" 2>/dev/null || true
ffmpeg_pid=''
deploy/cluster.sh down >>"$term" 2>&1 || true
cluster_up=0

log "encoding $out (VP9)"
mkdir -p "$(dirname "$out")" "$(dirname "$gif")"
nice -n 10 ffmpeg -nostdin -loglevel error -y -i "$raw" -c:v libvpx-vp9 -b:v 0 -crf 40 \
	-deadline realtime -cpu-used 8 -row-mt 1 -g 80 -pix_fmt yuv420p -an "$out"
log "encoding $gif (10 s from ${gif_start}s, 640 px wide)"
nice -n 10 ffmpeg -nostdin -loglevel error -y -ss "$gif_start" -t 10 -i "$raw" \
	-vf "fps=5,scale=640:-1:flags=lanczos,split[a][b];[a]palettegen=max_colors=96:stats_mode=diff[p];[b][p]paletteuse=dither=bayer:bayer_scale=4:diff_mode=rectangle" \
	"$gif"
dur=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$out" 2>/dev/null || echo '?')
log "done: $out ($(du -h "$out" | cut -f1), ${dur}s), $gif ($(du -h "$gif" | cut -f1))"
