#!/usr/bin/env bash
# Interop test suite for the Vane MQTT broker.
#
# Starts the broker under test on a free 127.0.0.1 port, runs the paho-mqtt
# scenarios (interop/paho_scenarios.py), the mosquitto_pub/mosquitto_sub
# scenarios below, the TLS scenarios of interop/tls_mosquitto.sh (a second
# Vane with TLS listeners; skipped without openssl), the secure example of
# interop/secure_example.sh (examples/secure/: TLS, password file, ACL), then the MQTT 5.0
# scenarios of paho-mqtt (interop/paho_v5_scenarios.py) and of MQTT.js (interop/mqttjs/scenarios.mjs),
# then a subset of the paho and MQTT.js scenarios again over WebSocket (ws://, the broker's
# second listener, path /mqtt; names end in @ws; Vane only),
# stops the broker and prints one final line:
#     N passed, M failed
# Exit status is 0 only if nothing failed. MQTT 5.0 scenarios for features
# Vane does not implement yet are listed as PENDING (PENDING constant at the
# top of each v5 script) and count as neither passed nor failed.
#
# Environment:
#   VANE_BIN            broker binary (default: target/release/vane; built with
#                       `cargo build --release -p vane` if unset and missing)
#   INTEROP_BROKER_CMD  run another broker instead of Vane, `{port}` is replaced
#                       by the chosen port, e.g. 'mosquitto -p {port}'.
#                       Vane-only scenarios (p2p) are skipped.
#   INTEROP_ONLY        space-separated scenario names to run (debugging); names
#                       of the v5 suites start with v5_ (paho) and mqttjs_ (MQTT.js);
#                       mosq_tls runs the TLS suite, secure_example the secure example
#                       and ws the WebSocket suites
#   INTEROP_V5_ALL=1    also run the PENDING MQTT 5.0 scenarios, as real tests
#                       (paho_v5_scenarios.py --all, ALL=1 for MQTT.js)
#   INTEROP_SKIP_INSTALL=1  do not try to install missing dependencies
#                       (including `npm ci` of MQTT.js in interop/mqttjs)
#
# All traffic goes to 127.0.0.1 only. Every wait is bounded.

set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
HOST=127.0.0.1

log() { printf '[interop] %s\n' "$*" >&2; }

FAILED=0
PASSED=0
BROKER_LOG=""
LOG_SHOWN=0

# Print the tail of the broker log (once), so failures can be diagnosed.
show_broker_log() {
    if [ "$LOG_SHOWN" -eq 0 ] && [ -n "$BROKER_LOG" ] && [ -s "$BROKER_LOG" ]; then
        LOG_SHOWN=1
        echo "----- broker log (last 60 lines of $BROKER_LOG) -----" >&2
        tail -n 60 "$BROKER_LOG" >&2
        echo "-----------------------------------------------------" >&2
    fi
}

# Setup failure: still end with the summary line.
die() {
    log "$*"
    FAILED=1
    show_broker_log
    echo "0 passed, 1 failed"
    exit 1
}

# ---------------------------------------------------------------------------
# Dependencies
# ---------------------------------------------------------------------------
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
    SUDO="sudo -n"
fi

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    local opts=(-y -q -o DPkg::Lock::Timeout=300 --no-install-recommends)
    if ! $SUDO apt-get install "${opts[@]}" "$@" </dev/null >&2; then
        log "apt-get install failed; running apt-get update and retrying"
        $SUDO apt-get -q -o DPkg::Lock::Timeout=300 update </dev/null >&2
        $SUDO apt-get install "${opts[@]}" "$@" </dev/null >&2
    fi
}

paho_ok() {
    python3 - <<'EOF' 2>/dev/null
import sys
import paho.mqtt
sys.exit(0 if paho.mqtt.__version__.split(".")[0] == "2" else 1)
EOF
}

install_deps() {
    if ! command -v mosquitto_pub >/dev/null 2>&1 || ! command -v mosquitto_sub >/dev/null 2>&1; then
        log "installing mosquitto-clients"
        apt_install mosquitto-clients
    fi
    if ! command -v python3 >/dev/null 2>&1; then
        log "installing python3"
        apt_install python3
    fi
    if ! paho_ok; then
        if ! python3 -m pip --version >/dev/null 2>&1; then
            log "installing python3-pip"
            apt_install python3-pip
        fi
        log "installing paho-mqtt 2.x"
        local pipargs=(install -q --disable-pip-version-check --no-input 'paho-mqtt>=2,<3')
        python3 -m pip "${pipargs[@]}" </dev/null >&2 \
            || python3 -m pip "${pipargs[@]}" --break-system-packages </dev/null >&2
    fi
}

MQTTJS_DIR="$SCRIPT_DIR/mqttjs"

# MQTT.js is installed from interop/mqttjs/package-lock.json; usable when the
# installed mqtt version is the one pinned in package.json.
mqttjs_ok() {
    command -v node >/dev/null 2>&1 || return 1
    (cd "$MQTTJS_DIR" && timeout 20 node -e '
        const want = require("./package.json").dependencies.mqtt;
        const have = require("./node_modules/mqtt/package.json").version;
        process.exit(want === have ? 0 : 1);' </dev/null >/dev/null 2>&1)
}

install_mqttjs() {
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        log "installing nodejs and npm"
        apt_install nodejs npm
    fi
    if ! mqttjs_ok; then
        log "installing MQTT.js (npm ci in interop/mqttjs)"
        (cd "$MQTTJS_DIR" && timeout -k 5 300 npm ci --no-audit --no-fund) </dev/null >&2
    fi
}

if [ "${INTEROP_SKIP_INSTALL:-0}" != 1 ]; then
    install_deps || true   # verified below
    install_mqttjs || true # verified before the MQTT.js scenarios
fi
command -v mosquitto_pub >/dev/null 2>&1 && command -v mosquitto_sub >/dev/null 2>&1 \
    || die "mosquitto_pub/mosquitto_sub not available (apt-get install mosquitto-clients)"
paho_ok || die "paho-mqtt 2.x not importable by python3 (pip install 'paho-mqtt>=2,<3')"

# ---------------------------------------------------------------------------
# Broker
# ---------------------------------------------------------------------------
WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/vane-interop.XXXXXX")
BROKER_LOG="$WORKDIR/broker.log"
BROKER_PID=""
SUB_PIDS=()

cleanup() {
    local rc=$?
    set +e
    for p in "${SUB_PIDS[@]}"; do
        kill "$p" 2>/dev/null
    done
    if [ -n "$BROKER_PID" ] && kill -0 "$BROKER_PID" 2>/dev/null; then
        kill -TERM "$BROKER_PID" 2>/dev/null
        for _ in $(seq 1 30); do
            kill -0 "$BROKER_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$BROKER_PID" 2>/dev/null; then
            log "broker did not exit on SIGTERM within 3 s; sending SIGKILL"
            kill -KILL "$BROKER_PID" 2>/dev/null
        fi
        wait "$BROKER_PID" 2>/dev/null
    fi
    if [ "$rc" -ne 0 ] || [ "$FAILED" -ne 0 ]; then
        show_broker_log
        log "logs kept in $WORKDIR"
    else
        rm -rf "$WORKDIR"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    python3 "$SCRIPT_DIR/free_port.py"
}

PORT=$(free_port)
WS_PORT=$(free_port)
PAHO_ARGS=()
QUIRKS=""

if [ -n "${INTEROP_BROKER_CMD:-}" ]; then
    BROKER_CMD=${INTEROP_BROKER_CMD//\{port\}/$PORT}
    PAHO_ARGS+=(--no-vane)
    case "$(basename "${BROKER_CMD%% *}")" in
        mosquitto) PAHO_ARGS+=(--quirks mosquitto); QUIRKS=mosquitto ;;
    esac
    log "broker under test (override): $BROKER_CMD"
    # exec so that $! is the broker itself
    bash -c "exec $BROKER_CMD" >"$BROKER_LOG" 2>&1 </dev/null &
    BROKER_PID=$!
else
    if [ -z "${VANE_BIN:-}" ]; then
        VANE_BIN="$REPO_ROOT/target/release/vane"
        if [ ! -x "$VANE_BIN" ]; then
            log "building Vane (cargo build --release -p vane)"
            (cd "$REPO_ROOT" && cargo build --release -p vane) >&2 </dev/null \
                || die "cargo build --release -p vane failed"
        fi
    fi
    [ -x "$VANE_BIN" ] || die "Vane binary not found or not executable: $VANE_BIN"
    log "broker under test: $VANE_BIN serve --bind $HOST:$PORT --ws-bind $HOST:$WS_PORT --store-dir $WORKDIR/store (durability sync)"
    "$VANE_BIN" serve --bind "$HOST:$PORT" --ws-bind "$HOST:$WS_PORT" --store-dir "$WORKDIR/store" >"$BROKER_LOG" 2>&1 </dev/null &
    BROKER_PID=$!
fi

port_open() {
    timeout 1 bash -c "exec 3<>/dev/tcp/$HOST/$PORT" 2>/dev/null
}

ready=0
for _ in $(seq 1 150); do   # ~15 s
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then
        log "broker exited during startup (see log below)"
        break
    fi
    if port_open; then
        ready=1
        break
    fi
    sleep 0.1
done
if [ "$ready" -ne 1 ]; then
    kill -0 "$BROKER_PID" 2>/dev/null && log "broker did not accept connections on $HOST:$PORT within 15 s"
    die "broker failed to start"
fi
log "broker is up on $HOST:$PORT (pid $BROKER_PID)"

# ---------------------------------------------------------------------------
# Result bookkeeping
# ---------------------------------------------------------------------------
pass() { PASSED=$((PASSED + 1)); echo "PASS $1"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $1: $2"; }

# ---------------------------------------------------------------------------
# paho-mqtt scenarios
# ---------------------------------------------------------------------------
PAHO_OUT="$WORKDIR/paho.out"
only_args=()
if [ -n "${INTEROP_ONLY:-}" ]; then
    # shellcheck disable=SC2206
    only_args=(--only ${INTEROP_ONLY})
fi
set +e
timeout -k 5 300 python3 -u "$SCRIPT_DIR/paho_scenarios.py" --host "$HOST" --port "$PORT" \
    "${PAHO_ARGS[@]}" "${only_args[@]}" 2>&1 | tee "$PAHO_OUT"
paho_rc=${PIPESTATUS[0]}
set -e
p_pass=$(grep -c '^PASS ' "$PAHO_OUT" || true)
p_fail=$(grep -c '^FAIL ' "$PAHO_OUT" || true)
PASSED=$((PASSED + p_pass))
FAILED=$((FAILED + p_fail))
if [ "$paho_rc" -ne 0 ] && [ "$p_fail" -eq 0 ]; then
    fail paho_scenarios "python exited with status $paho_rc without reporting a failed scenario"
fi

# ---------------------------------------------------------------------------
# mosquitto_pub / mosquitto_sub scenarios
# ---------------------------------------------------------------------------
if [ -n "${INTEROP_ONLY:-}" ]; then
    log "INTEROP_ONLY set: skipping mosquitto client scenarios"
else

RUN_ID=$(python3 -c 'import uuid; print(uuid.uuid4().hex[:10])')
MBASE="interop/$RUN_ID/mosq"
C=(-h "$HOST" -p "$PORT")

# start_sub OUTFILE ARGS... : start mosquitto_sub in debug mode in the
# background and wait (max 5 s) until its SUBACK arrived.
start_sub() {
    local out=$1
    shift
    # stdbuf: mosquitto_sub block-buffers its -d output when writing to a file
    timeout -k 2 20 stdbuf -oL mosquitto_sub "${C[@]}" -d "$@" >"$out" 2>&1 </dev/null &
    SUB_PID=$!
    SUB_PIDS+=("$SUB_PID")
    for _ in $(seq 1 50); do
        grep -q 'received SUBACK' "$out" 2>/dev/null && return 0
        kill -0 "$SUB_PID" 2>/dev/null || break
        sleep 0.1
    done
    return 1
}

# wait_sub : wait for the last started mosquitto_sub to exit (bounded by its
# own -W and the outer `timeout`).
wait_sub() {
    wait "$SUB_PID" 2>/dev/null || true
}

mpub() { timeout -k 2 10 mosquitto_pub "${C[@]}" "$@" </dev/null; }

# Message lines in `-v` output are "topic payload"; everything else in the
# debug output starts with "Client " or "Subscribed".
msg_lines() { grep -E "^interop/$RUN_ID/" "$1" || true; }

scenario_mosq_qos() {
    local q=$1 name="mosq_qos$1" out="$WORKDIR/mosq_q$1.out" t="$MBASE/q$1"
    local n=5 expected="" i
    if ! start_sub "$out" -t '#' -v -R -q 2 -C "$n" -W 10; then
        fail "$name" "mosquitto_sub did not get a SUBACK within 5 s: $(tr '\n' ' ' <"$out")"
        return
    fi
    for i in $(seq 1 "$n"); do
        if ! mpub -q "$q" -t "$t" -m "m-$q-$i"; then
            fail "$name" "mosquitto_pub -q $q failed"
            return
        fi
        expected+="$t m-$q-$i"$'\n'
    done
    wait_sub
    local got
    got=$(msg_lines "$out")$'\n'
    if [ "$got" != "$expected" ]; then
        fail "$name" "expected $(printf '%q' "$expected") got $(printf '%q' "$got")"
        return
    fi
    # each PUBLISH must have been delivered at the publish QoS (sub is QoS 2)
    local bad
    bad=$(grep 'received PUBLISH' "$out" | grep -vc "q$q," || true)
    if [ "$bad" -ne 0 ]; then
        fail "$name" "deliveries with QoS != $q: $(grep 'received PUBLISH' "$out" | tr '\n' ' ')"
        return
    fi
    pass "$name"
}

scenario_mosq_retained() {
    local name=mosq_retained t="$MBASE/retained" got
    if ! mpub -q 1 -r -t "$t" -m "kept-$RUN_ID"; then
        fail "$name" "mosquitto_pub -r failed"
        return
    fi
    got=$(timeout -k 2 10 mosquitto_sub "${C[@]}" -t "$t" -C 1 -W 5 -F '%r %q %t %p' </dev/null 2>&1 || true)
    if [ "$got" != "1 0 $t kept-$RUN_ID" ]; then
        fail "$name" "later subscriber expected '1 0 $t kept-$RUN_ID' (retain qos topic payload), got '$got'"
        return
    fi
    # the same at QoS 1 subscription, and with a wildcard filter
    got=$(timeout -k 2 10 mosquitto_sub "${C[@]}" -q 1 -t "$MBASE/+" -C 1 -W 5 -F '%r %q %t %p' </dev/null 2>&1 || true)
    if [ "$got" != "1 1 $t kept-$RUN_ID" ]; then
        fail "$name" "wildcard subscriber expected '1 1 $t kept-$RUN_ID', got '$got'"
        return
    fi
    # clear it; a new subscriber must then get nothing
    if ! mpub -q 1 -r -n -t "$t"; then
        fail "$name" "clearing the retained message (mosquitto_pub -r -n) failed"
        return
    fi
    got=$(timeout -k 2 10 mosquitto_sub "${C[@]}" -t "$t" -C 1 -W 1 -v </dev/null 2>/dev/null || true)
    if [ -n "$got" ]; then
        fail "$name" "retained message still delivered after clearing: '$got'"
        return
    fi
    pass "$name"
}

scenario_mosq_v31() {
    local name=mosq_mqttv31 t="$MBASE/v31" out="$WORKDIR/mosq_v31.out" got
    # subscriber also speaks 3.1
    if ! start_sub "$out" -V mqttv31 -t "$t" -v -q 1 -C 2 -W 10; then
        fail "$name" "mosquitto_sub -V mqttv31 did not get a SUBACK within 5 s: $(tr '\n' ' ' <"$out")"
        return
    fi
    if ! mpub -V mqttv31 -q 1 -t "$t" -m "v31-q1"; then
        fail "$name" "mosquitto_pub -V mqttv31 -q 1 failed"
        return
    fi
    if ! mpub -V mqttv31 -q 2 -t "$t" -m "v31-q2"; then
        fail "$name" "mosquitto_pub -V mqttv31 -q 2 failed"
        return
    fi
    wait_sub
    got=$(msg_lines "$out")
    if [ "$got" != "$t v31-q1"$'\n'"$t v31-q2" ]; then
        fail "$name" "expected both 3.1 messages, got $(printf '%q' "$got")"
        return
    fi
    pass "$name"
}

scenario_mosq_qos 0
scenario_mosq_qos 1
scenario_mosq_qos 2
scenario_mosq_retained
scenario_mosq_v31

fi

# ---------------------------------------------------------------------------
# MQTT 5.0 scenarios: paho-mqtt (protocol=MQTTv5), then MQTT.js
# ---------------------------------------------------------------------------
PENDING=0

# run_suite NAME OUTFILE COMMAND... : run one scenario script (bounded by the
# caller's `timeout`), show its output, add its PASS/FAIL/PENDING lines to the
# totals.
run_suite() {
    local name=$1 out=$2 rc n_pass n_fail n_pend
    shift 2
    set +e
    "$@" 2>&1 </dev/null | tee "$out"
    rc=${PIPESTATUS[0]}
    set -e
    n_pass=$(grep -c '^PASS ' "$out" || true)
    n_fail=$(grep -c '^FAIL ' "$out" || true)
    n_pend=$(grep -c '^PENDING ' "$out" || true)
    PASSED=$((PASSED + n_pass))
    FAILED=$((FAILED + n_fail))
    PENDING=$((PENDING + n_pend))
    if [ "$rc" -ne 0 ] && [ "$n_fail" -eq 0 ]; then
        fail "$name" "exited with status $rc without reporting a failed scenario"
    fi
}

# TLS with mosquitto_pub/mosquitto_sub (interop/tls_mosquitto.sh): Vane only, as the script
# starts its own Vane with TLS listeners and certificates it makes with openssl.
if [ -z "${INTEROP_BROKER_CMD:-}" ] && { [ -z "${INTEROP_ONLY:-}" ] || [[ " $INTEROP_ONLY " == *" mosq_tls "* ]]; }; then
    run_suite mosq_tls "$WORKDIR/mosq_tls.out" \
        env VANE_BIN="$VANE_BIN" timeout -k 5 120 bash "$SCRIPT_DIR/tls_mosquitto.sh"
fi

# The secure example (interop/secure_example.sh): examples/secure/ with its own Vane, TLS only,
# password file and ACL.
if [ -z "${INTEROP_BROKER_CMD:-}" ] && { [ -z "${INTEROP_ONLY:-}" ] || [[ " $INTEROP_ONLY " == *" secure_example "* ]]; }; then
    run_suite secure_example "$WORKDIR/secure_example.out" \
        env VANE_BIN="$VANE_BIN" timeout -k 5 120 bash "$SCRIPT_DIR/secure_example.sh"
fi

V5_PY_ARGS=(--host "$HOST" --port "$PORT")
if [ -n "${INTEROP_BROKER_CMD:-}" ]; then
    V5_PY_ARGS+=(--no-vane)
fi
if [ -n "$QUIRKS" ]; then
    V5_PY_ARGS+=(--quirks "$QUIRKS")
fi
if [ "${INTEROP_V5_ALL:-0}" = 1 ]; then
    V5_PY_ARGS+=(--all)
fi
run_suite paho_v5_scenarios "$WORKDIR/paho_v5.out" \
    timeout -k 5 120 python3 -u "$SCRIPT_DIR/paho_v5_scenarios.py" "${V5_PY_ARGS[@]}" "${only_args[@]}"

if mqttjs_ok; then
    run_suite mqttjs_scenarios "$WORKDIR/mqttjs.out" \
        env HOST="$HOST" PORT="$PORT" QUIRKS="$QUIRKS" ALL="${INTEROP_V5_ALL:-0}" ONLY="${INTEROP_ONLY:-}" \
        timeout -k 5 120 node "$MQTTJS_DIR/scenarios.mjs"
else
    fail mqttjs_setup "MQTT.js not usable: needs node and \`npm ci\` in interop/mqttjs (pinned mqtt version)"
fi

# MQTT over WebSocket: the same clients through the broker's ws:// listener. Only the scenarios
# that use the client library throughout (the others open raw TCP sockets to PORT).
PAHO_WS=(qos0_pubsub qos1_pubsub qos2_pubsub wildcards retained persistent_session clean_session_discards takeover mqtt31)
MQTTJS_WS="mqttjs_connect_v5 mqttjs_connect_v311 mqttjs_connect_v31 mqttjs_qos1_round_trip mqttjs_retained mqttjs_will mqttjs_v311_interop mqttjs_user_properties"
if [ -n "${INTEROP_BROKER_CMD:-}" ]; then
    log "broker override in use: skipping the WebSocket scenarios (they need the broker's ws:// listener)"
elif [ -z "${INTEROP_ONLY:-}" ] || [[ " $INTEROP_ONLY " == *" ws "* ]]; then
    run_suite paho_ws_scenarios "$WORKDIR/paho_ws.out" \
        timeout -k 5 180 python3 -u "$SCRIPT_DIR/paho_scenarios.py" --host "$HOST" --port "$WS_PORT" \
        --ws-path /mqtt --only "${PAHO_WS[@]}"
    if mqttjs_ok; then
        run_suite mqttjs_ws_scenarios "$WORKDIR/mqttjs_ws.out" \
            env URL="ws://$HOST:$WS_PORT/mqtt" ONLY="$MQTTJS_WS" \
            timeout -k 5 120 node "$MQTTJS_DIR/scenarios.mjs"
    fi
fi

if ! kill -0 "$BROKER_PID" 2>/dev/null; then
    fail broker_alive "broker process exited during the test run"
fi

if [ "$FAILED" -ne 0 ]; then
    show_broker_log
fi
if [ "$PENDING" -ne 0 ]; then
    echo "# $PENDING pending MQTT 5.0 scenarios not run (INTEROP_V5_ALL=1 runs them)"
fi
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
