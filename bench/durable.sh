#!/usr/bin/env bash
# Durability benchmarks: Vane with its store (`sync` and `batch`) and Mosquitto 2.0 with
# `persistence true`, side by side in one run on this machine.
#
# Installs Mosquitto if missing (apt-get), builds Vane (release), then for each broker and
# scenario starts a fresh broker on 127.0.0.1 with an empty state directory, pinned to
# BROKER_CPU, drives it with `vane bench` pinned to BENCH_CPU, and reads the broker's CPU and
# memory from /proc. Every start is timed from exec until the broker answers an MQTT CONNECT
# with a CONNACK (`vane bench conn --retry-for`). Scenarios (MQTT 3.1.1, 64-byte payloads):
#
#   throughput        PUBLISHERS publishers at QoS 1 -> one subscriber on bench/# with a
#                     persistent session (clean session 0), WARMUP s then DURATION s measured:
#                     msg/s received, lost, broker CPU and RSS. Vane `memory` runs it too, for
#                     reference. Afterwards the subscriber takes what is still queued for it,
#                     until nothing arrived for 5 s (longer than Mosquitto's autosave pauses),
#                     60 s at most: what has not arrived by then counts as lost.
#   retained-startup  RETAINED retained messages stored (QoS 1), the broker stopped with SIGTERM
#                     and started again: start-up time, then a new `#` subscriber must get them
#                     all (bounded by CHECK_WAIT s).
#   sessions-startup  SESSIONS persistent sessions, each subscribed to a topic of its own
#                     (dur/s/<i>, QoS 1), made and left offline (`vane bench conn --persistent
#                     --subscribe --disconnect`, at most 256 connections open at once); stopped
#                     and started again: start-up time, then every session is reconnected and
#                     must be resumed (CONNACK Session Present).
#   queued-rss        QUEUE_SESSIONS persistent sessions subscribed to q/# (QoS 1) go offline;
#                     QUEUE_MESSAGES QoS 1 messages are published, each queued for every
#                     session (1,000 x 1,000 = 1M queued): broker RSS before and after, then the
#                     sessions come back and must receive them (bounded by CHECK_WAIT s).
#
# Brokers: vane-sync, vane-batch (`vane serve --durability sync|batch`), vane-memory (throughput
# only) and mosquitto (`persistence true`, `autosave_interval MOSQUITTO_AUTOSAVE`). Mosquitto
# keeps everything in memory and writes its whole database (mosquitto.db, fsynced, then
# renamed) every autosave interval and at shutdown: nothing is written per message.
#
# Results: bench/results/durable-<date>/ holds one JSON per run, the `vane bench` JSON and the
# /proc samples in raw/, the configuration files used, and report.md; the report also replaces
# what is between <!-- durable:begin --> and <!-- durable:end --> in BENCHMARKS.md.
# A full run with the defaults takes about 10 minutes, plus the Vane build.
#
# Environment (defaults in brackets):
#   DURATION [10]  WARMUP [2]  (seconds)   PAYLOAD [64]   PUBLISHERS [100]
#   RETAINED [1000000]  SESSIONS [100000]  QUEUE_SESSIONS [1000]  QUEUE_MESSAGES [1000]
#   CHECK_WAIT [60]  START_WAIT [300]  STOP_WAIT [120]  (seconds)
#   BROKERS ["vane-sync vane-batch vane-memory mosquitto"]
#   SCENARIOS ["throughput retained-startup sessions-startup queued-rss"]
#   BROKER_CPU [0]  BENCH_CPU [1]  PORT [18877]
#   MOSQUITTO_AUTOSAVE [1]      Mosquitto autosave_interval, seconds
#   MOSQUITTO_MAX_QUEUED [1000000]  Mosquitto max_queued_messages (default 1000)
#   VANE_MAX_QUEUED [10000]     Vane [queue] max_messages (its default)
#   INFLIGHT [1024]             Mosquitto max_inflight_messages (Vane's default max_inflight)
#   VANE_BIN        a vane binary (broker and load generator) instead of building one
#   SKIP_BUILD=1    use target/release/vane as it is
#   SKIP_INSTALL=1  fail instead of installing Mosquitto
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
PUBLISHERS=${PUBLISHERS:-100}
RETAINED=${RETAINED:-1000000}
SESSIONS=${SESSIONS:-100000}
QUEUE_SESSIONS=${QUEUE_SESSIONS:-1000}
QUEUE_MESSAGES=${QUEUE_MESSAGES:-1000}
CHECK_WAIT=${CHECK_WAIT:-60}
START_WAIT=${START_WAIT:-300}
STOP_WAIT=${STOP_WAIT:-120}
BROKERS=${BROKERS:-"vane-sync vane-batch vane-memory mosquitto"}
SCENARIOS=${SCENARIOS:-"throughput retained-startup sessions-startup queued-rss"}
BROKER_CPU=${BROKER_CPU:-0}
BENCH_CPU=${BENCH_CPU:-1}
PORT=${PORT:-18877}
MOSQUITTO_AUTOSAVE=${MOSQUITTO_AUTOSAVE:-1}
MOSQUITTO_MAX_QUEUED=${MOSQUITTO_MAX_QUEUED:-1000000}
VANE_MAX_QUEUED=${VANE_MAX_QUEUED:-10000}
INFLIGHT=${INFLIGHT:-1024}
VANE_BIN=${VANE_BIN:-}
HOST=127.0.0.1
REPORT_PY="$SCRIPT_DIR/durable_report.py"
COMPARE_PY="$SCRIPT_DIR/compare_report.py"
# Publishers of the queued-rss scenario; QUEUE_MESSAGES is spread over them.
QUEUE_PUBLISHERS=10
LOG_TAG=durable
# shellcheck source=bench/lib.sh
. "$SCRIPT_DIR/lib.sh"

require_whole_numbers DURATION WARMUP PAYLOAD PUBLISHERS RETAINED SESSIONS QUEUE_SESSIONS QUEUE_MESSAGES \
    CHECK_WAIT START_WAIT STOP_WAIT PORT MOSQUITTO_AUTOSAVE MOSQUITTO_MAX_QUEUED VANE_MAX_QUEUED INFLIGHT
[ "$DURATION" -gt 0 ] || die "DURATION must be above zero"
[ "$QUEUE_MESSAGES" -ge "$QUEUE_PUBLISHERS" ] || die "QUEUE_MESSAGES must be at least $QUEUE_PUBLISHERS"
[ $((QUEUE_MESSAGES % QUEUE_PUBLISHERS)) -eq 0 ] || die "QUEUE_MESSAGES must be a multiple of $QUEUE_PUBLISHERS"
for b in $BROKERS; do
    case $b in vane-sync | vane-batch | vane-memory | mosquitto) ;; *) die "unknown broker $b" ;; esac
done
for s in $SCENARIOS; do
    case $s in throughput | retained-startup | sessions-startup | queued-rss) ;; *) die "unknown scenario $s" ;; esac
done

STAMP=$(date -u +%Y%m%d-%H%M%S)
OUT="$SCRIPT_DIR/results/durable-$STAMP"
RAW="$OUT/raw"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vane-durable.XXXXXX")
BROKER_PID=""
BENCH_PID=""
SAMPLER_PID=""
WATCHDOG_PID=""

trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------
# Tools: python3, taskset, timeout, Mosquitto, Vane
# ---------------------------------------------------------------------------
for tool in python3 taskset timeout du; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done

ensure_mosquitto
ensure_vane "${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/vane"
check_cpus

# The brokers hold up to QUEUE_SESSIONS connections at once, and the load generator as many;
# sessions-startup keeps at most 256 open at a time whatever SESSIONS is.
want=$((QUEUE_SESSIONS + PUBLISHERS + 1000))
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then
    die "the open-file limit is $hard (hard); QUEUE_SESSIONS and PUBLISHERS need $want"
fi
ulimit -n "$want"

# This script, its samplers and the load generator share BENCH_CPU; the broker has BROKER_CPU.
taskset -cp "$BENCH_CPU" $$ >/dev/null

# json_get FILE KEY...: prints the value at KEY... of a JSON file ("" when absent or null).
json_get() {
    python3 - "$@" <<'EOF'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    d = None
for k in sys.argv[2:]:
    d = d.get(k) if isinstance(d, dict) else None
print("" if d is None else d)
EOF
}

# ---------------------------------------------------------------------------
# Brokers
# ---------------------------------------------------------------------------
# The configurations; BENCHMARKS.md and the raw results show these files. Mosquitto's
# persistence_location is filled in per run (a fresh directory each time).
write_configs() {
    cat >"$WORK/vane.toml" <<EOF
# Vane in bench/durable.sh: defaults, but for a quieter log and the queue cap spelled out.
# --bind, --store-dir and --durability are given on the command line.
[queue]
# Messages queued per client (offline persistent session, or in-flight window full).
max_messages = $VANE_MAX_QUEUED
max_bytes = "64MiB"

[store]
batch_interval = "10ms"

[log]
level = "warn"
EOF
    local user_line=""
    # Started as root, Mosquitto drops to the `mosquitto` user, which cannot write the
    # persistence directory this script makes: keep root.
    [ "$(id -u)" -eq 0 ] && user_line="user root"
    cat >"$WORK/mosquitto.conf" <<EOF
listener $PORT $HOST
allow_anonymous true
persistence true
persistence_location @STATE_DIR@/
autosave_interval $MOSQUITTO_AUTOSAVE
autosave_on_changes false
max_connections -1
max_inflight_messages $INFLIGHT
max_queued_messages $MOSQUITTO_MAX_QUEUED
max_queued_bytes 0
set_tcp_nodelay true
$user_line
log_dest stderr
log_type error
log_type warning
EOF
}

# launch_broker NAME STATE_DIR LOG: starts the broker pinned to BROKER_CPU on STATE_DIR (kept
# across restarts); sets BROKER_PID and LAUNCHED. Does not wait.
launch_broker() {
    local name=$1 state=$2 logfile=$3
    port_open "$PORT" && die "port $PORT is already in use"
    mkdir -p "$state"
    LAUNCHED=$EPOCHREALTIME
    case $name in
    vane-sync | vane-batch | vane-memory)
        taskset -c "$BROKER_CPU" "$VANE_BIN" serve --config "$WORK/vane.toml" --bind "$HOST:$PORT" \
            --store-dir "$state/store" --durability "${name#vane-}" >>"$logfile" 2>&1 &
        ;;
    mosquitto)
        sed "s|@STATE_DIR@|$state|" "$WORK/mosquitto.conf" >"$state/mosquitto.conf"
        taskset -c "$BROKER_CPU" "$MOSQUITTO" -c "$state/mosquitto.conf" >>"$logfile" 2>&1 &
        ;;
    esac
    BROKER_PID=$!
}

# bench ID TIMEOUT ARGS...: runs `vane bench ARGS --json --quiet` pinned to BENCH_CPU, JSON to
# RAW/ID.json and stderr to RAW/ID.stderr, killed after TIMEOUT s; sets STATUS.
bench() {
    local id=$1 limit=$2
    shift 2
    STATUS=0
    env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE timeout -s KILL "$limit" taskset -c "$BENCH_CPU" \
        "$VANE_BIN" bench "$@" --host "$HOST" --port "$PORT" --json --quiet \
        >"$RAW/$id.json" 2>"$RAW/$id.stderr" </dev/null || STATUS=$?
    [ "$STATUS" -eq 0 ] || { log "$id: vane bench $1 exited with status $STATUS"; tail -n 3 "$RAW/$id.stderr" >&2 || true; }
}

# start_broker NAME STATE_DIR LOG ID: launches the broker and waits for its first CONNACK
# (a clean-session probe retried every 5 ms, START_WAIT s at most); sets STARTUP_SECS (empty
# when it never answered) and STARTUP_CPU_SECS (its CPU time until then).
start_broker() {
    local name=$1 state=$2 logfile=$3 id=$4
    launch_broker "$name" "$state" "$logfile"
    bench "$id-probe" $((START_WAIT + 30)) conn --connections 1 --hold 0s --connect-timeout 2s \
        --retry-for "${START_WAIT}s" --client-prefix dur-probe
    local connack
    connack=$(json_get "$RAW/$id-probe.json" first_connack_unix)
    STARTUP_SECS=""
    [ -n "$connack" ] && STARTUP_SECS=$(python3 -c "print(f'{$connack - $LAUNCHED:.3f}')")
    proc_ticks "$BROKER_PID"
    STARTUP_CPU_SECS=""
    [ -n "$TICKS" ] && STARTUP_CPU_SECS=$(python3 -c "import os; print(f'{$TICKS / os.sysconf(\"SC_CLK_TCK\"):.2f}')")
    if [ -z "$STARTUP_SECS" ]; then
        tail -n 20 "$logfile" >&2 || true
        log "$name did not answer a CONNECT within $START_WAIT s"
        return 1
    fi
}

# stop_broker_gracefully: SIGTERM, then waits STOP_WAIT s at most (kill -9 after); sets
# STOP_SECS and STOP_KILLED.
stop_broker_gracefully() {
    local began=$EPOCHREALTIME waited=0
    STOP_KILLED=0
    kill -TERM "$BROKER_PID" 2>/dev/null || true
    while kill -0 "$BROKER_PID" 2>/dev/null; do
        if [ "$waited" -ge $((STOP_WAIT * 20)) ]; then
            log "the broker did not stop within $STOP_WAIT s of SIGTERM: kill -9"
            kill -9 "$BROKER_PID" 2>/dev/null || true
            STOP_KILLED=1
            break
        fi
        pause 0.05
        waited=$((waited + 1))
    done
    wait "$BROKER_PID" 2>/dev/null || true
    STOP_SECS=$(python3 -c "print(f'{$EPOCHREALTIME - $began:.3f}')")
    BROKER_PID=""
}

# rss_now: prints the broker's RSS (VmRSS) in kB; empty once it is gone.
rss_now() {
    proc_kb "$BROKER_PID" VmRSS
    echo "$KB"
}

# rss_peak: prints the broker's peak RSS (VmHWM) in kB; empty once it is gone.
rss_peak() {
    proc_kb "$BROKER_PID" VmHWM
    echo "$KB"
}

# disk_bytes DIR: prints what DIR takes on disk, in bytes.
disk_bytes() {
    du -sk "$1" 2>/dev/null | awk '{ print $1 * 1024 }'
}

# fact KEY VALUE: appends one line to the run's facts (RUN_FACTS).
fact() {
    printf '%s=%s\n' "$1" "$2" >>"$RUN_FACTS"
}

# ---------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------
run_throughput() {
    local broker=$1 id="$1-throughput"
    local json="$RAW/$id.json" err="$RAW/$id.stderr" samples="$RAW/$id.samples"
    local state="$WORK/$id"
    : >"$samples"
    : >"$err"
    start_broker "$broker" "$state" "$RAW/$id.broker.log" "$id" || { stop_broker; return; }
    fact startup_empty_secs "$STARTUP_SECS"
    pause 0.5
    local rss_before status=0 launched ended
    rss_before=$(rss_now)
    ARGS=(fanin --host "$HOST" --port "$PORT" --json --publishers "$PUBLISHERS" --qos 1 --persistent
        --client-prefix dur-tp --payload "$PAYLOAD" --duration "${DURATION}s" --warmup "${WARMUP}s" --drain 60s --settle 5s)
    log "$broker / throughput: vane bench ${ARGS[*]}"
    launch_sampled $((WARMUP + DURATION + 150)) "$json" "$err" "$samples" "${ARGS[@]}"
    launched=$LAUNCHED
    finish_sampled
    status=$BENCH_STATUS
    ended=$ENDED
    local peak
    peak=$(rss_peak)
    [ -n "$peak" ] || log "$broker / throughput: the broker exited during the run"
    fact disk_bytes_after "$(disk_bytes "$state")"
    stop_broker
    [ "$status" -eq 0 ] || { log "$broker / throughput: vane bench exited with status $status"; tail -n 5 "$err" >&2 || true; }
    python3 "$COMPARE_PY" run --out "$RAW/$id.summary.json" --broker "$broker" --scenario throughput \
        --kind flow --bench-json "$json" --stderr "$err" --samples "$samples" \
        --status "$status" --launched "$launched" --ended "$ended" \
        --warmup "$WARMUP" --duration "$DURATION" --rss-before "$rss_before" \
        --rss-peak "$peak" --args "${ARGS[*]}" >&2 ||
        log "$broker / throughput: could not summarise the run"
}

# The second half of the start-up scenarios: stop gracefully, measure what is on disk, start
# again and time it.
restart_and_time() {
    local broker=$1 id=$2 state=$3
    fact rss_filled_kb "$(rss_now)"
    fact rss_peak_filled_kb "$(rss_peak)"
    stop_broker_gracefully
    fact stop_secs "$STOP_SECS"
    fact stop_killed "$STOP_KILLED"
    fact disk_bytes "$(disk_bytes "$state")"
    log "$broker / $id: stopped in $STOP_SECS s; $(disk_bytes "$state") bytes on disk; starting again"
    if ! start_broker "$broker" "$state" "$RAW/$id.broker.log" "$id-restart"; then
        fact startup_secs ""
        return 1
    fi
    fact startup_secs "$STARTUP_SECS"
    fact startup_cpu_secs "$STARTUP_CPU_SECS"
    fact rss_started_kb "$(rss_now)"
    log "$broker / $id: answered CONNECT $STARTUP_SECS s after exec"
}

run_retained_startup() {
    local broker=$1 id="$1-retained-startup" state="$WORK/$1-retained-startup"
    start_broker "$broker" "$state" "$RAW/$id.broker.log" "$id" || { stop_broker; return; }
    fact startup_empty_secs "$STARTUP_SECS"
    log "$broker / retained-startup: storing $RETAINED retained messages"
    bench "$id-fill" $((START_WAIT + 60)) retained --only store --messages "$RETAINED" --payload "$PAYLOAD" \
        --window 256 --duration "${START_WAIT}s" --prefix dur/r --client-prefix dur-r
    fact fill_status "$STATUS"
    fact fill_secs "$(json_get "$RAW/$id-fill.json" store_secs)"
    restart_and_time "$broker" "$id" "$state" || { stop_broker; return; }
    log "$broker / retained-startup: a new '#' subscriber"
    bench "$id-check" $((3 * CHECK_WAIT + 60)) retained --only receive --messages "$RETAINED" \
        --filter '#' --duration "${CHECK_WAIT}s" --prefix dur/r --client-prefix dur-r
    fact check_status "$STATUS"
    fact check_received "$(json_get "$RAW/$id-check.json" received)"
    fact check_missing "$(json_get "$RAW/$id-check.json" missing)"
    fact check_secs "$(json_get "$RAW/$id-check.json" receive_secs)"
    fact rss_checked_kb "$(rss_now)"
    fact rss_peak_kb "$(rss_peak)"
    stop_broker
}

run_sessions_startup() {
    local broker=$1 id="$1-sessions-startup" state="$WORK/$1-sessions-startup"
    start_broker "$broker" "$state" "$RAW/$id.broker.log" "$id" || { stop_broker; return; }
    fact startup_empty_secs "$STARTUP_SECS"
    log "$broker / sessions-startup: making $SESSIONS persistent sessions"
    bench "$id-fill" $((START_WAIT + 60)) conn --connections "$SESSIONS" --persistent --subscribe 'dur/s/{i}' \
        --qos 1 --disconnect --concurrency 256 --client-prefix dur-s
    fact fill_status "$STATUS"
    fact fill_secs "$(json_get "$RAW/$id-fill.json" open_secs)"
    fact fill_opened "$(json_get "$RAW/$id-fill.json" opened)"
    fact fill_subscribed "$(json_get "$RAW/$id-fill.json" subscribed)"
    restart_and_time "$broker" "$id" "$state" || { stop_broker; return; }
    log "$broker / sessions-startup: reconnecting every session"
    bench "$id-check" $((START_WAIT + 60)) conn --connections "$SESSIONS" --persistent --disconnect \
        --concurrency 256 --client-prefix dur-s
    fact check_status "$STATUS"
    fact check_opened "$(json_get "$RAW/$id-check.json" opened)"
    fact check_resumed "$(json_get "$RAW/$id-check.json" session_present)"
    fact check_secs "$(json_get "$RAW/$id-check.json" open_secs)"
    fact rss_checked_kb "$(rss_now)"
    fact rss_peak_kb "$(rss_peak)"
    stop_broker
}

run_queued_rss() {
    local broker=$1 id="$1-queued-rss" state="$WORK/$1-queued-rss"
    start_broker "$broker" "$state" "$RAW/$id.broker.log" "$id" || { stop_broker; return; }
    fact startup_empty_secs "$STARTUP_SECS"
    fact rss_empty_kb "$(rss_now)"
    log "$broker / queued-rss: $QUEUE_SESSIONS persistent sessions on q/#, then offline"
    bench "$id-sessions" 120 sub --subscribers "$QUEUE_SESSIONS" --persistent --filter 'q/#' --qos 1 \
        --duration 1s --warmup 0s --client-prefix dur-q
    fact sessions_status "$STATUS"
    pause 1
    fact rss_before_kb "$(rss_now)"
    local per=$((QUEUE_MESSAGES / QUEUE_PUBLISHERS))
    log "$broker / queued-rss: publishing $QUEUE_MESSAGES QoS 1 messages"
    bench "$id-publish" $((START_WAIT + 60)) pub --publishers "$QUEUE_PUBLISHERS" --count "$per" --qos 1 \
        --prefix q --payload "$PAYLOAD" --window 64 --warmup 0s --duration "${START_WAIT}s" --drain 30s \
        --client-prefix dur-qp
    fact publish_status "$STATUS"
    fact publish_secs "$(json_get "$RAW/$id-publish.json" measured_secs)"
    fact publish_acked "$(json_get "$RAW/$id-publish.json" totals acked)"
    pause 2
    fact rss_after_kb "$(rss_now)"
    fact rss_peak_queued_kb "$(rss_peak)"
    fact disk_bytes "$(disk_bytes "$state")"
    log "$broker / queued-rss: the sessions come back for their messages"
    bench "$id-check" $((CHECK_WAIT + 60)) sub --subscribers "$QUEUE_SESSIONS" --persistent --filter 'q/#' \
        --qos 1 --duration "${CHECK_WAIT}s" --warmup 0s --client-prefix dur-q
    fact check_status "$STATUS"
    fact check_resumed "$(json_get "$RAW/$id-check.json" resumed_sessions)"
    fact check_received "$(json_get "$RAW/$id-check.json" totals received)"
    fact check_min "$(json_get "$RAW/$id-check.json" subscriber_received_min)"
    fact check_max "$(json_get "$RAW/$id-check.json" subscriber_received_max)"
    fact rss_drained_kb "$(rss_now)"
    stop_broker
}

run_one() {
    local broker=$1 scenario=$2
    if [ "$broker" = vane-memory ] && [ "$scenario" != throughput ]; then
        return 0
    fi
    RUN_FACTS="$OUT/$broker-$scenario.env"
    : >"$RUN_FACTS"
    fact broker "$broker"
    fact scenario "$scenario"
    local began=$SECONDS
    case $scenario in
    throughput) run_throughput "$broker" ;;
    retained-startup) run_retained_startup "$broker" ;;
    sessions-startup) run_sessions_startup "$broker" ;;
    queued-rss) run_queued_rss "$broker" ;;
    esac
    fact run_secs $((SECONDS - began))
}

mkdir -p "$RAW"
write_configs
cp "$WORK/vane.toml" "$WORK/mosquitto.conf" "$OUT/"

version_of() {
    case $1 in
    vane-*) "$VANE_BIN" --version 2>/dev/null | head -n 1 ;;
    mosquitto) { "$MOSQUITTO" -h 2>/dev/null || true; } | awk '/^mosquitto version/ { print "mosquitto " $3; exit }' ;;
    esac
}

VANE_REV=$(vane_rev)
{
    machine_facts
    printf 'loadavg_before=%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
    printf 'filesystem=%s\n' "$(df -T "$WORK" 2>/dev/null | awk 'NR == 2 { print $2 }')"
    printf 'vane_rev=%s\n' "$VANE_REV"
    for b in $BROKERS; do printf 'version_%s=%s\n' "$b" "$(version_of "$b")"; done
    printf 'brokers=%s\nscenarios=%s\n' "$BROKERS" "$SCENARIOS"
    printf 'duration=%s\nwarmup=%s\npayload=%s\npublishers=%s\n' "$DURATION" "$WARMUP" "$PAYLOAD" "$PUBLISHERS"
    printf 'retained=%s\nsessions=%s\nqueue_sessions=%s\nqueue_messages=%s\n' "$RETAINED" "$SESSIONS" "$QUEUE_SESSIONS" "$QUEUE_MESSAGES"
    printf 'check_wait=%s\nstart_wait=%s\n' "$CHECK_WAIT" "$START_WAIT"
    printf 'broker_cpu=%s\nbench_cpu=%s\ninflight=%s\n' "$BROKER_CPU" "$BENCH_CPU" "$INFLIGHT"
    printf 'mosquitto_autosave=%s\nmosquitto_max_queued=%s\nvane_max_queued=%s\n' "$MOSQUITTO_AUTOSAVE" "$MOSQUITTO_MAX_QUEUED" "$VANE_MAX_QUEUED"
} >"$OUT/machine.env"

started=$SECONDS
for scenario in $SCENARIOS; do
    for broker in $BROKERS; do
        run_one "$broker" "$scenario"
    done
done
printf 'total_secs=%s\n' $((SECONDS - started)) >>"$OUT/machine.env"
log "runs took $((SECONDS - started)) s"

write_report "$REPORT_PY" "$OUT"
log "results in ${OUT#"$REPO_ROOT"/}"
