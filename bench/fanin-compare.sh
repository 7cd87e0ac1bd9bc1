#!/usr/bin/env bash
# Fan-in benchmark, Vane vs Mosquitto side by side on this machine.
#
# For each scenario (QoS 0, then QoS 1) and each broker (Mosquitto 2.0, then Vane), REPEAT
# times: starts a fresh broker pinned to one CPU, runs `vane bench fanin` pinned to another
# (100 publishers -> one subscriber on bench/#, 64-byte payloads, 2 s warmup, 10 s measured),
# samples the broker's CPU and RSS from /proc. Prints a markdown table of the median runs; the
# table is also written to bench/results/fanin-<date>.md, with the raw JSON of every run.
# About (2 + WARMUP + DURATION) s per run: 4 runs x REPEAT, 3 minutes with the defaults.
#
# Environment (defaults in brackets):
#   PUBLISHERS [100]  PAYLOAD [64]  DURATION [10] and WARMUP [2] in seconds
#   QOS_LIST ["0 1"]  REPEAT [3]  BROKER_CPU [0]  BENCH_CPU [1]
#   MOSQUITTO_PORT [18831]  VANE_PORT [18832]
#   BENCH_EXTRA       more arguments for `vane bench fanin`, e.g. "--batch 16"
#   VANE_BIN          a vane binary to use (broker and load generator) instead of building
#   SKIP_BUILD=1      use target/release/vane as it is
#   SKIP_INSTALL=1    do not install mosquitto
#
# Traffic goes to 127.0.0.1 only. Every wait is bounded; brokers are stopped on exit.

set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
cd "$REPO_ROOT"

PUBLISHERS=${PUBLISHERS:-100}
PAYLOAD=${PAYLOAD:-64}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
QOS_LIST=${QOS_LIST:-"0 1"}
REPEAT=${REPEAT:-3}
BROKER_CPU=${BROKER_CPU:-0}
BENCH_CPU=${BENCH_CPU:-1}
MOSQUITTO_PORT=${MOSQUITTO_PORT:-18831}
VANE_PORT=${VANE_PORT:-18832}
BENCH_EXTRA=${BENCH_EXTRA:-}
HOST=127.0.0.1
VANE_BIN=${VANE_BIN:-}

log() { printf '[fanin-compare] %s\n' "$*" >&2; }
die() {
    log "$*"
    exit 1
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vane-fanin.XXXXXX")
BROKER_PID=""
BENCH_PID=""
SAMPLER_PID=""
WATCHDOG_PID=""

stop_pid() {
    local pid=$1
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
}

cleanup() {
    stop_pid "$WATCHDOG_PID"
    stop_pid "$BENCH_PID"
    stop_pid "$SAMPLER_PID"
    stop_pid "$BROKER_PID"
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------
# Dependencies and build
# ---------------------------------------------------------------------------
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
    SUDO="sudo -n"
fi

find_mosquitto() {
    command -v mosquitto 2>/dev/null || { [ -x /usr/sbin/mosquitto ] && echo /usr/sbin/mosquitto; } || true
}

MOSQUITTO=$(find_mosquitto)
if [ -z "$MOSQUITTO" ]; then
    [ "${SKIP_INSTALL:-0}" = 1 ] && die "mosquitto is not installed (SKIP_INSTALL=1)"
    log "installing mosquitto"
    export DEBIAN_FRONTEND=noninteractive
    opts=(-y -q -o DPkg::Lock::Timeout=300 --no-install-recommends)
    if ! $SUDO apt-get install "${opts[@]}" mosquitto </dev/null >&2; then
        log "apt-get install failed; running apt-get update and retrying"
        $SUDO apt-get -q -o DPkg::Lock::Timeout=300 update </dev/null >&2
        $SUDO apt-get install "${opts[@]}" mosquitto </dev/null >&2
    fi
    MOSQUITTO=$(find_mosquitto)
    [ -n "$MOSQUITTO" ] || die "mosquitto is still missing after apt-get install"
fi
command -v jq >/dev/null 2>&1 || die "jq is required (apt-get install jq)"
command -v taskset >/dev/null 2>&1 || die "taskset is required (util-linux)"

if [ -z "$VANE_BIN" ]; then
    VANE_BIN="$REPO_ROOT/target/release/vane"
    if [ "${SKIP_BUILD:-0}" != 1 ]; then
        log "cargo build --release -p vane"
        cargo build --release -q -p vane >&2
    fi
fi
[ -x "$VANE_BIN" ] || die "$VANE_BIN is missing"

NPROC=$(nproc)
if [ "$NPROC" -lt 2 ]; then
    log "only $NPROC CPU: broker and load generator share it, the figures mean little"
    BENCH_CPU=$BROKER_CPU
fi
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------------------
# Brokers
# ---------------------------------------------------------------------------
port_open() {
    (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

wait_port() {
    local port=$1
    for _ in $(seq 100); do
        port_open "$port" && return 0
        kill -0 "$BROKER_PID" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# start_broker NAME: starts a fresh broker pinned to BROKER_CPU; sets BROKER_PID and PORT.
start_broker() {
    local name=$1
    case "$name" in
    mosquitto)
        PORT=$MOSQUITTO_PORT
        port_open "$PORT" && die "port $PORT is already in use"
        printf 'listener %s %s\nallow_anonymous true\npersistence false\nlog_dest stderr\n' \
            "$PORT" "$HOST" >"$WORK/mosquitto.conf"
        taskset -c "$BROKER_CPU" "$MOSQUITTO" -c "$WORK/mosquitto.conf" >"$WORK/$name.log" 2>&1 &
        ;;
    vane)
        PORT=$VANE_PORT
        port_open "$PORT" && die "port $PORT is already in use"
        taskset -c "$BROKER_CPU" "$VANE_BIN" serve --bind "$HOST:$PORT" >"$WORK/$name.log" 2>&1 &
        ;;
    esac
    BROKER_PID=$!
    if ! wait_port "$PORT"; then
        tail -n 20 "$WORK/$name.log" >&2 || true
        die "$name did not start listening on $HOST:$PORT"
    fi
}

stop_broker() {
    stop_pid "$BROKER_PID"
    BROKER_PID=""
}

# CPU ticks (user + system) of a process; empty once it is gone.
cpu_ticks() {
    sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $12 + $13 }'
}

# VmHWM (peak RSS) and VmRSS of a process, in kB.
rss_kb() {
    awk -v key="$2:" '$1 == key { print $2 }' "/proc/$1/status" 2>/dev/null
}

# sample BROKER BENCH OUT: every 0.25 s, "uptime_ns broker_ticks bench_ticks" while BENCH lives.
sample() {
    local broker=$1 bench=$2 out=$3
    while kill -0 "$bench" 2>/dev/null; do
        echo "$(date +%s%N) $(cpu_ticks "$broker") $(cpu_ticks "$bench")" >>"$out"
        sleep 0.25
    done
}

# CPU % of the broker and the load generator over the measured window, from the samples.
window_cpu() {
    local samples=$1 start_ns=$2 end_ns=$3
    awk -v s="$start_ns" -v e="$end_ns" -v hz="$CLK_TCK" '
        NF == 3 && $1 >= s && $1 <= e {
            if (!n++) { t0 = $1; b0 = $2; g0 = $3 }
            t1 = $1; b1 = $2; g1 = $3
        }
        END {
            if (n < 2 || t1 == t0) { print "n/a n/a"; exit }
            secs = (t1 - t0) / 1e9
            printf "%.0f %.0f\n", 100 * (b1 - b0) / hz / secs, 100 * (g1 - g0) / hz / secs
        }' "$samples"
}

# ---------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------
ROWS="$WORK/rows.txt"
RAW="$WORK/raw.jsonl"
: >"$ROWS"
: >"$RAW"
BENCH_LIMIT=$((WARMUP + DURATION + 45))

run_one() {
    local broker=$1 qos=$2
    start_broker "$broker"
    local json="$WORK/$broker-qos$qos.json" err="$WORK/$broker-qos$qos.err" samples="$WORK/$broker-qos$qos.samples"
    : >"$samples"
    log "$broker, QoS $qos: $PUBLISHERS publishers, ${PAYLOAD} B, ${WARMUP}s warmup + ${DURATION}s"
    local launched
    launched=$(date +%s%N)
    # taskset execs the load generator, so $! is its pid (sampled for CPU). It stops by itself;
    # the watchdog is a second guard.
    # shellcheck disable=SC2086 # BENCH_EXTRA is a list of arguments
    taskset -c "$BENCH_CPU" "$VANE_BIN" bench fanin --host "$HOST" --port "$PORT" \
        --publishers "$PUBLISHERS" --qos "$qos" --payload "$PAYLOAD" \
        --duration "${DURATION}s" --warmup "${WARMUP}s" --json $BENCH_EXTRA >"$json" 2>"$err" &
    BENCH_PID=$!
    sample "$BROKER_PID" "$BENCH_PID" "$samples" &
    SAMPLER_PID=$!
    (sleep "$BENCH_LIMIT" && kill -9 "$BENCH_PID" 2>/dev/null) &
    WATCHDOG_PID=$!
    local status=0
    wait "$BENCH_PID" || status=$?
    BENCH_PID=""
    stop_pid "$WATCHDOG_PID"
    WATCHDOG_PID=""
    wait "$SAMPLER_PID" 2>/dev/null || true
    SAMPLER_PID=""
    local hwm rss
    hwm=$(rss_kb "$BROKER_PID" VmHWM)
    rss=$(rss_kb "$BROKER_PID" VmRSS)
    stop_broker
    sed 's/^/    /' "$err" >&2
    if [ "$status" -ne 0 ] || ! jq -e . "$json" >/dev/null 2>&1; then
        log "$broker, QoS $qos: the load generator failed (exit $status)"
        printf '%s|%s|failed||||||\n' "$broker" "$qos" >>"$ROWS"
        return
    fi
    # The window starts after connecting (well under a second) and the warmup.
    local cpu
    cpu=$(window_cpu "$samples" $((launched + (WARMUP * 1000 + 500) * 1000000)) \
        $((launched + (WARMUP + DURATION) * 1000000000 + 500000000)))
    jq -c --arg broker "$broker" '{broker_name: $broker} + .' "$json" >>"$RAW"
    jq -r --arg broker "$broker" --arg cpu "$cpu" --arg hwm "$hwm" --arg rss "$rss" '
        [$broker, (.qos | tostring), (.received_per_sec | round | tostring), (.sent_per_sec | round | tostring),
         (.totals.lost // "" | tostring), ($cpu | split(" ")[0]), ($cpu | split(" ")[1]), $hwm, $rss] | join("|")' \
        "$json" >>"$ROWS"
}

for qos in $QOS_LIST; do
    for broker in mosquitto vane; do
        for _ in $(seq "$REPEAT"); do
            run_one "$broker" "$qos"
        done
    done
done

# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
group() {
    local n=$1 out=""
    while [ "${#n}" -gt 3 ]; do
        out=",${n: -3}$out"
        n=${n:0:${#n}-3}
    done
    printf '%s' "$n$out"
}
# median_row BROKER QOS: the successful run with the median msg/s received, then |min|max|runs.
median_row() {
    awk -F'|' -v b="$1" -v q="$2" '$1 == b && $2 == q && $3 != "failed"' "$ROWS" | sort -t'|' -k3,3n |
        awk -F'|' '{ r[NR] = $0; v[NR] = $3 } END { if (NR) printf "%s|%s|%s|%s\n", r[int((NR + 1) / 2)], v[1], v[NR], NR }'
}
pct() { case "$1" in '' | *[!0-9]*) printf 'n/a' ;; *) printf '%s%%' "$1" ;; esac; }
mib() { [ -n "$1" ] && awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }' || printf 'n/a'; }

CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MOSQUITTO_VERSION=$({ "$MOSQUITTO" -h 2>/dev/null || true; } | awk '/^mosquitto version/ { print $3; exit }')
VANE_REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || VANE_REV="$VANE_REV (with uncommitted changes)"
DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
mkdir -p "$SCRIPT_DIR/results"
OUT="$SCRIPT_DIR/results/fanin-$(date -u +%Y%m%d-%H%M%S).md"

{
    echo "# Fan-in: Vane vs Mosquitto"
    echo
    echo "$DATE. $PUBLISHERS publishers -> 1 subscriber on \`bench/#\`, ${PAYLOAD}-byte payloads, MQTT 3.1.1,"
    echo "${WARMUP} s warmup then ${DURATION} s measured. Broker pinned to CPU $BROKER_CPU, \`vane bench fanin\` to CPU $BENCH_CPU."
    echo
    echo "| broker | scenario | msg/s received (median) | Vane / Mosquitto | msg/s received, min – max | msg/s sent (written to the socket) | lost: acked, never delivered (whole run) | broker CPU | broker RSS peak (end) | load generator CPU |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for qos in $QOS_LIST; do
        mosq=$(median_row mosquitto "$qos" | cut -d'|' -f3)
        for broker in mosquitto vane; do
            row=$(median_row "$broker" "$qos")
            if [ -z "$row" ]; then
                echo "| $broker | QoS $qos | failed | | | | | | | |"
                continue
            fi
            IFS='|' read -r _ _ recv sent lost cpu gcpu hwm rss min max runs <<<"$row"
            ratio="—"
            if [ "$broker" = vane ] && [ -n "$mosq" ] && [ "$mosq" != 0 ]; then
                ratio=$(awk -v a="$recv" -v b="$mosq" 'BEGIN { printf "%.2f×", a / b }')
            fi
            [ -n "$lost" ] && lost=$(group "$lost") || lost="—"
            range="$(group "$min") – $(group "$max") ($runs runs)"
            echo "| $broker | QoS $qos | $(group "$recv") | $ratio | $range | $(group "$sent") | $lost | $(pct "$cpu") | $(mib "$hwm") ($(mib "$rss")) | $(pct "$gcpu") |"
        done
    done
    failed=$(grep -c '|failed|' "$ROWS" || true)
    if [ "$failed" -gt 0 ]; then
        echo
        echo "$failed run(s) failed and are left out."
    fi
    echo
    echo "Machine: $NPROC CPUs, $CPU_MODEL, Linux $(uname -r). Mosquitto ${MOSQUITTO_VERSION:-?} (config: listener, allow_anonymous, no persistence; defaults otherwise: max_inflight_messages 20, max_queued_messages 1000). Vane $VANE_REV, binary built $(date -u -r "$VANE_BIN" +%Y-%m-%dT%H:%M:%SZ) (default config: max_inflight 1024, queue 10000 messages, drop-oldest, backpressure for QoS 1/2)."
    echo
    echo "CPU is the share of one CPU over the measured window (100% = one core busy). A load generator near 100% means the figure is bounded by the client, not the broker."
    echo
    echo "<details><summary>Raw results (vane bench fanin --json)</summary>"
    echo
    echo '```'
    cat "$RAW"
    echo '```'
    echo
    echo "</details>"
} | tee "$OUT"
log "written to ${OUT#"$REPO_ROOT"/}"
