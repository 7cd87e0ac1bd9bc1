#!/usr/bin/env bash
# The secure example (examples/secure/) with mosquitto_pub / mosquitto_sub: TLS only, users
# from the password file, topics from the ACL.
#
# Works on a copy of examples/secure in a temporary directory (a free 127.0.0.1 port instead of
# 8883, paths into the copy, an in-memory store), makes its certificates with the example's
# make-certs.sh, starts its own Vane (VANE_BIN) and stops it at the end. Prints one PASS/FAIL
# line per scenario (SKIP lines when openssl or the mosquitto clients are missing);
# interop/run.sh adds them to its totals. Exit status 0 only if nothing failed.
#
#   VANE_BIN=target/release/vane bash interop/secure_example.sh

set -uo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
EXAMPLE="$SCRIPT_DIR/../examples/secure"
source "$SCRIPT_DIR/mosquitto_common.sh"
require_tools secure_example
make_workdir vane-secure-example "secure example"

cp "$EXAMPLE/make-certs.sh" "$EXAMPLE/vane.toml" "$EXAMPLE/passwd" "$EXAMPLE/acl" "$DIR/"
if ! bash "$DIR/make-certs.sh" >"$DIR/certs.log" 2>&1; then
    fail secure_example_setup "make-certs.sh failed: $(tail -n 5 "$DIR/certs.log" | tr '\n' ' ')"
    exit 1
fi
for f in ca.pem server.pem server.key; do
    if [ ! -s "$DIR/certs/$f" ]; then
        fail secure_example_setup "make-certs.sh did not make certs/$f"
        exit 1
    fi
done

PORT=$(python3 "$SCRIPT_DIR/free_port.py")
# The example's own file, with its port and paths moved into the copy.
sed -e "s|127.0.0.1:8883|$HOST:$PORT|" -e "s|examples/secure/|$DIR/|g" "$EXAMPLE/vane.toml" >"$DIR/vane.toml"
printf '\n[store]\ndurability = "memory"\n' >>"$DIR/vane.toml"

start_broker "$PORT" secure_example_setup

RUN_ID=$(python3 -c 'import uuid; print(uuid.uuid4().hex[:10])')
# As in README.md: no -h, so the clients connect to localhost, the name in the certificate.
TLS=(--cafile "$DIR/certs/ca.pem" -p "$PORT")
SENSOR=(-u sensor1 -P sensor1-pass)
DASH=(-u dashboard -P dashboard-pass)

SUB_PID=""
# start_dashboard OUT : the dashboard subscribes to sensors/# and prints the first message.
start_dashboard() {
    timeout -k 2 20 stdbuf -oL mosquitto_sub "${TLS[@]}" "${DASH[@]}" -d -t 'sensors/#' -q 1 -v -C 1 -W 15 \
        >"$1" 2>&1 </dev/null &
    SUB_PID=$!
    for _ in $(seq 1 100); do
        grep -q 'received SUBACK' "$1" 2>/dev/null && return 0
        kill -0 "$SUB_PID" 2>/dev/null || break
        sleep 0.1
    done
    return 1
}

# first_message OUT : the topic and payload of the one message the dashboard printed.
first_message() {
    wait "$SUB_PID" 2>/dev/null
    grep -E '^sensors/' "$1" || true
}

spub() { timeout -k 2 10 mosquitto_pub "${TLS[@]}" "$@" </dev/null; }

# The dashboard receives what sensor1 publishes.
out="$DIR/receive.out"
if ! start_dashboard "$out"; then
    fail secure_example_dashboard_receives "no SUBACK for dashboard: $(tr '\n' ' ' <"$out")"
else
    spub "${SENSOR[@]}" -q 1 -t sensors/sensor1/temp -m "t-$RUN_ID" >"$DIR/pub.out" 2>&1
    got=$(first_message "$out")
    if [ "$got" = "sensors/sensor1/temp t-$RUN_ID" ]; then
        pass secure_example_dashboard_receives
    else
        fail secure_example_dashboard_receives "expected 'sensors/sensor1/temp t-$RUN_ID', got '$got'"
    fi
fi

# sensor1 cannot publish outside sensors/sensor1/#: MQTT 5.0 PUBACK 0x87, nothing forwarded
# (the dashboard's first message is the allowed one that follows).
out="$DIR/sensor_outside.out"
if ! start_dashboard "$out"; then
    fail secure_example_sensor_confined "no SUBACK for dashboard: $(tr '\n' ' ' <"$out")"
else
    refused=$(spub "${SENSOR[@]}" -V mqttv5 -q 1 -t sensors/sensor2/temp -m "bad-$RUN_ID" 2>&1)
    spub "${SENSOR[@]}" -q 1 -t sensors/sensor1/temp -m "ok-$RUN_ID" >/dev/null 2>&1
    got=$(first_message "$out")
    if [ "$got" != "sensors/sensor1/temp ok-$RUN_ID" ]; then
        fail secure_example_sensor_confined "dashboard expected only 'sensors/sensor1/temp ok-$RUN_ID', got '$got'"
    elif [[ "$refused" != *"Not authorized"* ]]; then
        fail secure_example_sensor_confined "mosquitto_pub -V mqttv5 did not report 'Not authorized': $refused"
    else
        pass secure_example_sensor_confined
    fi
fi

# The dashboard cannot publish (MQTT 3.1.1: acknowledged and dropped).
out="$DIR/dashboard_publish.out"
if ! start_dashboard "$out"; then
    fail secure_example_dashboard_cannot_publish "no SUBACK for dashboard: $(tr '\n' ' ' <"$out")"
else
    spub "${DASH[@]}" -q 1 -t sensors/sensor1/temp -m "forged-$RUN_ID" >/dev/null 2>&1
    spub "${SENSOR[@]}" -q 1 -t sensors/sensor1/temp -m "real-$RUN_ID" >/dev/null 2>&1
    got=$(first_message "$out")
    if [ "$got" = "sensors/sensor1/temp real-$RUN_ID" ]; then
        pass secure_example_dashboard_cannot_publish
    else
        fail secure_example_dashboard_cannot_publish "expected 'sensors/sensor1/temp real-$RUN_ID', got '$got'"
    fi
fi

# Anonymous clients and wrong passwords are refused at CONNECT.
if out=$(spub -q 1 -t sensors/sensor1/temp -m anon 2>&1); then
    fail secure_example_anonymous_refused "anonymous mosquitto_pub succeeded"
else
    pass "secure_example_anonymous_refused ($(echo "$out" | head -n 1 | cut -c1-80))"
fi
if out=$(spub -u sensor1 -P wrong -q 1 -t sensors/sensor1/temp -m x 2>&1); then
    fail secure_example_wrong_password_refused "mosquitto_pub with a wrong password succeeded"
else
    pass "secure_example_wrong_password_refused ($(echo "$out" | head -n 1 | cut -c1-80))"
fi

if ! kill -0 "$BROKER_PID" 2>/dev/null; then
    fail secure_example_broker_alive "broker exited during the scenarios"
fi
[ "$FAILED" -eq 0 ]
