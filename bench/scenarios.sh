#!/usr/bin/env bash
# One run of each `vane bench` scenario against a fresh Vane broker on this machine.
#
# For each scenario (fanout, pairs, conn, latency, retained; fanin has bench/fanin-compare.sh)
# starts `vane serve` pinned to BROKER_CPU, runs the scenario pinned to BENCH_CPU, prints its
# table and keeps the JSON in bench/results/scenarios-<date>/<scenario>.json.
#
# Environment (defaults in brackets):
#   SCENARIOS ["fanout pairs conn latency retained"]  QOS [0]  DURATION [5] seconds
#   SUBSCRIBERS [100]  PAIRS [500]  CONNECTIONS [10000]  RATE [10000]  RETAINED [100000]
#   BROKER_CPU [0]  BENCH_CPU [1]  PORT [18833]
#   VANE_BIN   a vane binary to use instead of building target/release/vane
#
# Traffic goes to 127.0.0.1 only (conn also binds 127.0.0.2 onwards). Every wait is bounded;
# the broker is stopped on exit.

set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
cd "$REPO_ROOT"

SCENARIOS=${SCENARIOS:-"fanout pairs conn latency retained"}
QOS=${QOS:-0}
DURATION=${DURATION:-5}
SUBSCRIBERS=${SUBSCRIBERS:-100}
PAIRS=${PAIRS:-500}
CONNECTIONS=${CONNECTIONS:-10000}
RATE=${RATE:-10000}
RETAINED=${RETAINED:-100000}
BROKER_CPU=${BROKER_CPU:-0}
BENCH_CPU=${BENCH_CPU:-1}
PORT=${PORT:-18833}
VANE_BIN=${VANE_BIN:-}

log() { printf '[scenarios] %s\n' "$*" >&2; }

if [ -z "$VANE_BIN" ]; then
    log "building vane (release)"
    cargo build --release -p vane >&2
    VANE_BIN=target/release/vane
fi
OUT="bench/results/scenarios-$(date -u +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"

BROKER_PID=""
stop_broker() {
    [ -n "$BROKER_PID" ] || return 0
    kill "$BROKER_PID" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$BROKER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=""
}
trap stop_broker EXIT
trap 'exit 130' INT TERM

start_broker() {
    taskset -c "$BROKER_CPU" "$VANE_BIN" serve --bind "127.0.0.1:$PORT" >"$OUT/broker-$1.log" 2>&1 &
    BROKER_PID=$!
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
            return 0
        fi
        kill -0 "$BROKER_PID" 2>/dev/null || { log "the broker exited"; exit 1; }
        sleep 0.1
    done
    log "the broker is not listening after 10 s"
    exit 1
}

for scenario in $SCENARIOS; do
    case $scenario in
        fanout) args=(--subscribers "$SUBSCRIBERS" --qos "$QOS" --duration "${DURATION}s") ;;
        pairs) args=(--pairs "$PAIRS" --qos "$QOS" --duration "${DURATION}s") ;;
        conn) args=(--connections "$CONNECTIONS" --hold "${DURATION}s") ;;
        latency) args=(--rate "$RATE" --qos "$((QOS > 1 ? 1 : QOS))" --duration "${DURATION}s") ;;
        retained) args=(--messages "$RETAINED") ;;
        *) log "unknown scenario $scenario"; exit 1 ;;
    esac
    start_broker "$scenario"
    log "$scenario ${args[*]}"
    # The scenario has its own hard deadline; `timeout` is a second one.
    if ! timeout 300 taskset -c "$BENCH_CPU" "$VANE_BIN" bench "$scenario" --port "$PORT" \
        "${args[@]}" --json --quiet >"$OUT/$scenario.json"; then
        log "$scenario failed"
    fi
    stop_broker
    cat "$OUT/$scenario.json"
done
log "results in $OUT"
