#!/usr/bin/env bash
# Every `vane bench` scenario against Vane, Mosquitto and rumqttd, side by side on this machine.
#
# Installs what is missing (Mosquitto 2.0 from Debian with apt-get; rumqttd with
# `cargo install rumqttd` into bench/.tools), builds Vane (release), then for each broker in
# turn and each scenario starts a fresh broker on 127.0.0.1 pinned to BROKER_CPU, runs the
# scenario with `vane bench` pinned to BENCH_CPU, and samples the broker's CPU and memory from
# /proc. Scenarios (64-byte payloads, MQTT 3.1.1, WARMUP s then DURATION s measured):
#
#   fanin-qos0, fanin-qos1     PUBLISHERS publishers -> one subscriber on bench/#
#   fanout-qos0, fanout-qos1   one publisher -> SUBSCRIBERS subscribers
#   pairs-qos0                 PAIRS publisher/subscriber pairs
#   latency                    one publisher at LATENCY_RATE msg/s: p50 / p99 / p99.9
#   conn                       CONNECTIONS idle connections: connect rate, failures, and the
#                              broker's RSS per connection ((RSS held - RSS before) / opened)
#   retained                   RETAINED retained messages, then a new `#` subscriber: time until
#                              it has them all, or "stalled after N" after RETAINED_WAIT s
#
# Results: bench/results/compare-<date>/ holds one JSON per run (the `vane bench` result plus
# the broker's CPU and RSS), the raw samples, and report.md; the report also replaces what is
# between <!-- compare:begin --> and <!-- compare:end --> in BENCHMARKS.md.
# A full run with the defaults takes about 8 minutes (rumqttd 0.20 delivers only 100 retained
# messages, so its retained run waits the whole RETAINED_WAIT), plus the Vane build and, the
# first time, `cargo install rumqttd` (about 4 minutes on 2 cores).
#
# Environment (defaults in brackets):
#   DURATION [10]  WARMUP [2]  (seconds)   PAYLOAD [64]   MQTT_VERSION [3.1.1] (or 5)
#   PUBLISHERS [100]  SUBSCRIBERS [100]  PAIRS [500]  LATENCY_RATE [10000]
#   CONNECTIONS [10000]  RETAINED [100000]  RETAINED_WAIT [60]
#   BROKERS ["vane mosquitto rumqttd"]
#   SCENARIOS ["fanin-qos0 fanin-qos1 fanout-qos0 fanout-qos1 pairs-qos0 latency conn retained"]
#   BROKER_CPU [0]  BENCH_CPU [1]  PORT [18840]
#   MOSQUITTO_MAX_QUEUED [1000000]  INFLIGHT [1024] (Mosquitto max_inflight_messages and
#                                    rumqttd max_inflight_count; Vane's default max_inflight)
#   VANE_BIN        a vane binary (broker and load generator) instead of building one
#   SKIP_BUILD=1    use target/release/vane as it is
#   SKIP_INSTALL=1  fail instead of installing a missing broker
#   NO_BENCHMARKS_UPDATE=1  leave BENCHMARKS.md alone (the report is still written)
#
# Traffic stays on 127.0.0.1 (the load generator connects from 127.0.0.2 onwards). Every wait
# is bounded; brokers and load generators are stopped on exit.

set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
cd "$REPO_ROOT"

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
PAYLOAD=${PAYLOAD:-64}
MQTT_VERSION=${MQTT_VERSION:-3.1.1}
PUBLISHERS=${PUBLISHERS:-100}
SUBSCRIBERS=${SUBSCRIBERS:-100}
PAIRS=${PAIRS:-500}
LATENCY_RATE=${LATENCY_RATE:-10000}
CONNECTIONS=${CONNECTIONS:-10000}
RETAINED=${RETAINED:-100000}
RETAINED_WAIT=${RETAINED_WAIT:-60}
BROKERS=${BROKERS:-"vane mosquitto rumqttd"}
SCENARIOS=${SCENARIOS:-"fanin-qos0 fanin-qos1 fanout-qos0 fanout-qos1 pairs-qos0 latency conn retained"}
BROKER_CPU=${BROKER_CPU:-0}
BENCH_CPU=${BENCH_CPU:-1}
PORT=${PORT:-18840}
MOSQUITTO_MAX_QUEUED=${MOSQUITTO_MAX_QUEUED:-1000000}
INFLIGHT=${INFLIGHT:-1024}
VANE_BIN=${VANE_BIN:-}
HOST=127.0.0.1
TOOLS="$SCRIPT_DIR/.tools"
REPORT_PY="$SCRIPT_DIR/compare_report.py"
LOG_TAG=compare
# shellcheck source=bench/lib.sh
. "$SCRIPT_DIR/lib.sh"

require_whole_numbers DURATION WARMUP PAYLOAD PUBLISHERS SUBSCRIBERS PAIRS LATENCY_RATE CONNECTIONS RETAINED RETAINED_WAIT PORT
case $MQTT_VERSION in 3.1.1 | 5) ;; *) die "MQTT_VERSION is 3.1.1 or 5" ;; esac
[ "$DURATION" -gt 0 ] || die "DURATION must be above zero"

STAMP=$(date -u +%Y%m%d-%H%M%S)
OUT="$SCRIPT_DIR/results/compare-$STAMP"
RAW="$OUT/raw"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vane-compare.XXXXXX")
BROKER_PID=""
BENCH_PID=""
SAMPLER_PID=""
WATCHDOG_PID=""

trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------
# Tools: python3, taskset, timeout, Mosquitto, rumqttd, Vane
# ---------------------------------------------------------------------------
for tool in python3 taskset timeout; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done

find_rumqttd() {
    if [ -x "$TOOLS/bin/rumqttd" ]; then
        echo "$TOOLS/bin/rumqttd"
    else
        command -v rumqttd 2>/dev/null || true
    fi
}

ensure_mosquitto

RUMQTTD=""
if needs rumqttd; then
    RUMQTTD=$(find_rumqttd)
    if [ -z "$RUMQTTD" ]; then
        [ "${SKIP_INSTALL:-0}" = 1 ] && die "rumqttd is not installed (SKIP_INSTALL=1)"
        log "installing rumqttd (cargo install rumqttd --root bench/.tools; a few minutes)"
        timeout 3600 cargo install -q rumqttd --root "$TOOLS" </dev/null >&2
        RUMQTTD=$(find_rumqttd)
        [ -n "$RUMQTTD" ] || die "rumqttd is still missing after cargo install"
    fi
fi

ensure_vane "$REPO_ROOT/target/release/vane"
check_cpus

# The conn scenario holds CONNECTIONS sockets in the load generator and as many in the broker.
want=$((CONNECTIONS + 1000))
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then
    log "the open-file limit is $hard (hard): conn opens $((hard - 1000)) connections, not $CONNECTIONS"
    CONNECTIONS=$((hard - 1000))
    want=$hard
fi
ulimit -n "$want"

# This script, its samplers and the load generator share BENCH_CPU; the broker has BROKER_CPU.
taskset -cp "$BENCH_CPU" $$ >/dev/null

# ---------------------------------------------------------------------------
# Brokers
# ---------------------------------------------------------------------------
# wait_port: waits 10 s at most for the broker to listen on PORT; fails if it exits first.
wait_port() {
    for _ in $(seq 200); do
        port_open "$PORT" && return 0
        kill -0 "$BROKER_PID" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

write_configs() {
    # No persistence, anonymous clients, no limit below what the scenarios need.
    cat >"$WORK/mosquitto.conf" <<EOF
listener $PORT $HOST
allow_anonymous true
persistence false
max_connections -1
max_inflight_messages $INFLIGHT
max_queued_messages $MOSQUITTO_MAX_QUEUED
max_queued_bytes 0
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning
EOF
    local section=v4
    [ "$MQTT_VERSION" = 5 ] && section=v5
    cat >"$WORK/rumqttd.toml" <<EOF
id = 0

[router]
id = 0
max_connections = $((CONNECTIONS + 1000))
max_outgoing_packet_count = 1024
max_segment_size = 104857600
max_segment_count = 10

[$section.1]
name = "$section-1"
listen = "$HOST:$PORT"
next_connection_delay_ms = 0
    [$section.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 1048576
    max_inflight_count = $INFLIGHT
    dynamic_filters = true
EOF
}

# start_broker NAME LOG: a fresh broker on HOST:PORT pinned to BROKER_CPU; sets BROKER_PID.
start_broker() {
    local name=$1 logfile=$2
    port_open "$PORT" && die "port $PORT is already in use"
    case $name in
    vane) taskset -c "$BROKER_CPU" "$VANE_BIN" serve --bind "$HOST:$PORT" --durability memory >"$logfile" 2>&1 & ;;
    mosquitto) taskset -c "$BROKER_CPU" "$MOSQUITTO" -c "$WORK/mosquitto.conf" >"$logfile" 2>&1 & ;;
    rumqttd) taskset -c "$BROKER_CPU" "$RUMQTTD" -q -c "$WORK/rumqttd.toml" >"$logfile" 2>&1 & ;;
    *) die "unknown broker $name" ;;
    esac
    BROKER_PID=$!
    if ! wait_port; then
        tail -n 20 "$logfile" >&2 || true
        die "$name did not start listening on $HOST:$PORT within 10 s"
    fi
}

# ---------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------
# The `vane bench` arguments of a scenario; sets ARGS and KIND (flow, latency, conn, retained).
scenario_args() {
    local common=(--host "$HOST" --port "$PORT" --mqtt-version "$MQTT_VERSION" --json)
    # Drain: at QoS 1 up to 100 queues of 10,000+ messages may still be on their way when the
    # measured time ends; they count as lost only if they have not arrived 10 s later.
    local flow=(--payload "$PAYLOAD" --duration "${DURATION}s" --warmup "${WARMUP}s" --drain 10s)
    KIND=flow
    case $1 in
    fanin-qos0) ARGS=(fanin "${common[@]}" "${flow[@]}" --publishers "$PUBLISHERS" --qos 0) ;;
    fanin-qos1) ARGS=(fanin "${common[@]}" "${flow[@]}" --publishers "$PUBLISHERS" --qos 1) ;;
    fanout-qos0) ARGS=(fanout "${common[@]}" "${flow[@]}" --subscribers "$SUBSCRIBERS" --qos 0) ;;
    fanout-qos1) ARGS=(fanout "${common[@]}" "${flow[@]}" --subscribers "$SUBSCRIBERS" --qos 1) ;;
    pairs-qos0) ARGS=(pairs "${common[@]}" "${flow[@]}" --pairs "$PAIRS" --qos 0) ;;
    latency)
        KIND=latency
        ARGS=(latency "${common[@]}" --payload "$PAYLOAD" --duration "${DURATION}s" --warmup "${WARMUP}s" --rate "$LATENCY_RATE" --qos 0)
        ;;
    conn)
        KIND=conn
        ARGS=(conn "${common[@]}" --connections "$CONNECTIONS" --hold "$((DURATION > 5 ? DURATION : 5))s")
        ;;
    retained)
        KIND=retained
        ARGS=(retained "${common[@]}" --payload "$PAYLOAD" --messages "$RETAINED" --duration "${RETAINED_WAIT}s")
        ;;
    *) die "unknown scenario $1" ;;
    esac
}

# Upper bound on one run, on top of `vane bench`'s own hard deadline.
run_limit() {
    case $KIND in
    flow | latency) echo $((WARMUP + DURATION + 90)) ;;
    conn) echo $((DURATION + 240)) ;;
    retained) echo $((3 * RETAINED_WAIT + 60)) ;;
    esac
}

run_one() {
    local broker=$1 scenario=$2
    local id="$broker-$scenario"
    local json="$RAW/$id.bench.json" err="$RAW/$id.stderr" samples="$RAW/$id.samples"
    scenario_args "$scenario"
    : >"$samples"
    : >"$err"
    start_broker "$broker" "$RAW/$id.broker.log"
    pause 0.5
    local rss_before rss_loaded="" opened_at="" status=0 launched ended
    proc_kb "$BROKER_PID" VmRSS
    rss_before=$KB
    log "$broker / $scenario: vane bench ${ARGS[*]}"
    launch_sampled "$(run_limit)" "$json" "$err" "$samples" "${ARGS[@]}"
    launched=$LAUNCHED
    if [ "$KIND" = conn ]; then
        # The broker's RSS with every connection held: a second after the load generator says
        # they are open (it holds them for at least 5 s).
        while kill -0 "$BENCH_PID" 2>/dev/null; do
            count_lines "$err" "opened "
            if [ "$LINES" -gt 0 ]; then
                opened_at=$EPOCHREALTIME
                pause 1
                proc_kb "$BROKER_PID" VmRSS
                rss_loaded=$KB
                break
            fi
            pause 0.1
        done
    fi
    finish_sampled
    status=$BENCH_STATUS
    ended=$ENDED
    proc_kb "$BROKER_PID" VmHWM
    local rss_peak=$KB
    [ -n "$rss_peak" ] || log "$broker / $scenario: the broker exited during the run"
    stop_broker
    [ "$status" -eq 0 ] || { log "$broker / $scenario: vane bench exited with status $status"; tail -n 5 "$err" >&2 || true; }
    python3 "$REPORT_PY" run --out "$OUT/$id.json" --broker "$broker" --scenario "$scenario" \
        --kind "$KIND" --bench-json "$json" --stderr "$err" --samples "$samples" \
        --status "$status" --launched "$launched" --ended "$ended" --opened "$opened_at" \
        --warmup "$WARMUP" --duration "$DURATION" --rss-before "$rss_before" \
        --rss-loaded "$rss_loaded" --rss-peak "$rss_peak" --args "${ARGS[*]}" >&2 ||
        log "$broker / $scenario: could not summarise the run"
}

mkdir -p "$RAW"
write_configs
cp "$WORK/mosquitto.conf" "$WORK/rumqttd.toml" "$RAW/"

version_of() {
    case $1 in
    vane) "$VANE_BIN" --version 2>/dev/null | head -n 1 ;;
    mosquitto) { "$MOSQUITTO" -h 2>/dev/null || true; } | awk '/^mosquitto version/ { print "mosquitto " $3; exit }' ;;
    rumqttd) "$RUMQTTD" --version 2>/dev/null | head -n 1 ;;
    esac
}

VANE_REV=$(vane_rev)
{
    machine_facts
    printf 'vane_rev=%s\n' "$VANE_REV"
    for b in $BROKERS; do printf 'version_%s=%s\n' "$b" "$(version_of "$b")"; done
    printf 'brokers=%s\nscenarios=%s\n' "$BROKERS" "$SCENARIOS"
    printf 'duration=%s\nwarmup=%s\npayload=%s\nmqtt_version=%s\n' "$DURATION" "$WARMUP" "$PAYLOAD" "$MQTT_VERSION"
    printf 'publishers=%s\nsubscribers=%s\npairs=%s\nlatency_rate=%s\n' "$PUBLISHERS" "$SUBSCRIBERS" "$PAIRS" "$LATENCY_RATE"
    printf 'connections=%s\nretained=%s\nretained_wait=%s\n' "$CONNECTIONS" "$RETAINED" "$RETAINED_WAIT"
    printf 'broker_cpu=%s\nbench_cpu=%s\ninflight=%s\nmosquitto_max_queued=%s\n' "$BROKER_CPU" "$BENCH_CPU" "$INFLIGHT" "$MOSQUITTO_MAX_QUEUED"
} >"$OUT/machine.env"

started=$SECONDS
for broker in $BROKERS; do
    for scenario in $SCENARIOS; do
        run_one "$broker" "$scenario"
    done
done
log "runs took $((SECONDS - started)) s"

write_report "$REPORT_PY" "$OUT"
log "results in ${OUT#"$REPO_ROOT"/}"
