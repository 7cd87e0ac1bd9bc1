# Shared by the interop scripts that drive mosquitto_pub / mosquitto_sub against a Vane of
# their own (tls_mosquitto.sh, secure_example.sh): PASS/FAIL lines, the SKIP when a tool is
# missing, and a work directory removed at exit with the broker stopped (and its log shown
# when something failed). Source it; it reads VANE_BIN.

HOST=127.0.0.1
VANE_BIN=${VANE_BIN:?VANE_BIN must name the vane binary}
FAILED=0
BROKER_PID=""

pass() { echo "PASS $1"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $1: $2"; }

# require_tools SCENARIO: exits the script (status 0, a SKIP line) when openssl or the
# mosquitto clients are missing.
require_tools() {
    if ! command -v openssl >/dev/null 2>&1; then
        echo "SKIP $1: openssl not installed"
        exit 0
    fi
    if ! command -v mosquitto_pub >/dev/null 2>&1 || ! command -v mosquitto_sub >/dev/null 2>&1; then
        echo "SKIP $1: mosquitto_pub/mosquitto_sub not installed"
        exit 0
    fi
}

# make_workdir PREFIX LABEL: sets DIR to a new temporary directory, removed at exit together
# with the broker started as BROKER_PID; LABEL names the broker log printed on failure.
make_workdir() {
    DIR=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    WORKDIR_LABEL=$2
    trap cleanup_workdir EXIT
}

cleanup_workdir() {
    if [ -n "$BROKER_PID" ] && kill -0 "$BROKER_PID" 2>/dev/null; then
        kill -TERM "$BROKER_PID" 2>/dev/null
        wait "$BROKER_PID" 2>/dev/null
    fi
    if [ "$FAILED" -ne 0 ] && [ -s "$DIR/broker.log" ]; then
        echo "----- $WORKDIR_LABEL broker log (last 30 lines) -----" >&2
        tail -n 30 "$DIR/broker.log" >&2
    fi
    rm -rf "$DIR"
}

# start_broker PORT SCENARIO: runs `vane serve --config $DIR/vane.toml` as BROKER_PID, logging
# to $DIR/broker.log, and waits up to about 10 s for PORT to accept connections; when it does
# not, a FAIL line for SCENARIO and the script exits.
start_broker() {
    "$VANE_BIN" serve --config "$DIR/vane.toml" >"$DIR/broker.log" 2>&1 </dev/null &
    BROKER_PID=$!
    local up=0
    for _ in $(seq 1 100); do
        kill -0 "$BROKER_PID" 2>/dev/null || break
        if timeout 1 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null; then
            up=1
            break
        fi
        sleep 0.1
    done
    if [ "$up" -ne 1 ]; then
        fail "$2" "broker did not start: $(tail -n 5 "$DIR/broker.log" | tr '\n' ' ')"
        exit 1
    fi
}
