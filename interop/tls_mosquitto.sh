#!/usr/bin/env bash
# TLS interop: mosquitto_pub / mosquitto_sub against Vane TLS listeners, one with server
# authentication only and one requiring client certificates (mutual TLS).
#
# Self-contained: makes a CA, a server certificate for localhost/127.0.0.1 and client
# certificates with openssl in a temporary directory, starts its own Vane (VANE_BIN) on two
# free 127.0.0.1 ports with an in-memory store, and stops it at the end. Prints one
# PASS/FAIL line per scenario (SKIP lines when openssl or the mosquitto clients are missing);
# interop/run.sh adds them to its totals. Exit status 0 only if nothing failed.
#
#   VANE_BIN=target/release/vane bash interop/tls_mosquitto.sh

set -uo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$SCRIPT_DIR/mosquitto_common.sh"
require_tools mosq_tls
make_workdir vane-tls-interop "TLS"

# ---------------------------------------------------------------------------
# Certificates (EC P-256, valid two days)
# ---------------------------------------------------------------------------
ssl() { openssl "$@" >>"$DIR/openssl.log" 2>&1; }

# make_ca NAME : NAME.key, NAME.pem
make_ca() {
    ssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=vane interop $1" -keyout "$DIR/$1.key" -out "$DIR/$1.pem" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
}

# make_leaf NAME CN EXTENSIONS : NAME.key, NAME.pem signed by ca
make_leaf() {
    printf '%s\n' "$3" >"$DIR/$1.ext"
    ssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$2" \
        -keyout "$DIR/$1.key" -out "$DIR/$1.csr" &&
        ssl x509 -req -in "$DIR/$1.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" -CAcreateserial \
            -days 2 -extfile "$DIR/$1.ext" -out "$DIR/$1.pem"
}

if ! { make_ca ca && make_ca other-ca &&
    make_leaf server localhost $'basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth' &&
    make_leaf client device-1 $'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth'; }; then
    fail mosq_tls_setup "openssl could not make the certificates: $(tail -n 5 "$DIR/openssl.log" | tr '\n' ' ')"
    exit 1
fi

# ---------------------------------------------------------------------------
# Broker: TLS on one port, mutual TLS on another
# ---------------------------------------------------------------------------
free_port() {
    python3 "$SCRIPT_DIR/free_port.py"
}
TLS_PORT=$(free_port)
MTLS_PORT=$(free_port)
cat >"$DIR/vane.toml" <<EOF
[[listeners]]
bind = "$HOST:$TLS_PORT"
tls = { cert = "$DIR/server.pem", key = "$DIR/server.key" }

[[listeners]]
bind = "$HOST:$MTLS_PORT"
tls = { cert = "$DIR/server.pem", key = "$DIR/server.key", client_ca = "$DIR/ca.pem", require_client_cert = true }

[store]
durability = "memory"
EOF

start_broker "$MTLS_PORT" mosq_tls_setup

# ---------------------------------------------------------------------------
# Scenarios. The server certificate names localhost, which mosquitto checks.
# ---------------------------------------------------------------------------
RUN_ID=$(python3 -c 'import uuid; print(uuid.uuid4().hex[:10])')

# round_trip NAME PORT CLIENT-TLS-ARGS... : a QoS 1 message from mosquitto_pub reaches a
# mosquitto_sub, both over TLS.
round_trip() {
    local name=$1 port=$2 t="interop/$RUN_ID/$1" out="$DIR/$1.out" sub_pid got
    shift 2
    timeout -k 2 20 stdbuf -oL mosquitto_sub -h localhost -p "$port" "$@" -d -t "$t" -q 1 -C 1 -W 10 \
        >"$out" 2>&1 </dev/null &
    sub_pid=$!
    for _ in $(seq 1 50); do
        grep -q 'received SUBACK' "$out" 2>/dev/null && break
        kill -0 "$sub_pid" 2>/dev/null || break
        sleep 0.1
    done
    if ! grep -q 'received SUBACK' "$out"; then
        kill "$sub_pid" 2>/dev/null
        fail "$name" "mosquitto_sub got no SUBACK over TLS: $(tr '\n' ' ' <"$out")"
        return
    fi
    if ! timeout -k 2 10 mosquitto_pub -h localhost -p "$port" "$@" -q 1 -t "$t" -m "over-tls-$RUN_ID" \
        </dev/null >"$DIR/$name.pub" 2>&1; then
        kill "$sub_pid" 2>/dev/null
        fail "$name" "mosquitto_pub over TLS failed: $(tr '\n' ' ' <"$DIR/$name.pub")"
        return
    fi
    wait "$sub_pid" 2>/dev/null
    got=$(grep -c "^over-tls-$RUN_ID\$" "$out" || true)
    if [ "$got" -ne 1 ]; then
        fail "$name" "expected the message once, got: $(tr '\n' ' ' <"$out")"
        return
    fi
    pass "$name"
}

# refused NAME PORT CLIENT-TLS-ARGS... : mosquitto_pub cannot publish.
refused() {
    local name=$1 port=$2
    shift 2
    if timeout -k 2 10 mosquitto_pub -h localhost -p "$port" "$@" -q 1 -t "interop/$RUN_ID/x" -m x \
        </dev/null >"$DIR/$name.out" 2>&1; then
        fail "$name" "mosquitto_pub succeeded but should have been refused"
        return
    fi
    pass "$name ($(tr '\n' ' ' <"$DIR/$name.out" | cut -c1-100))"
}

round_trip mosq_tls "$TLS_PORT" --cafile "$DIR/ca.pem"
refused mosq_tls_untrusted_ca "$TLS_PORT" --cafile "$DIR/other-ca.pem"
round_trip mosq_mtls_client_cert "$MTLS_PORT" --cafile "$DIR/ca.pem" \
    --cert "$DIR/client.pem" --key "$DIR/client.key"
refused mosq_mtls_no_client_cert "$MTLS_PORT" --cafile "$DIR/ca.pem"

if ! kill -0 "$BROKER_PID" 2>/dev/null; then
    fail mosq_tls_broker_alive "TLS broker exited during the scenarios"
fi
[ "$FAILED" -eq 0 ]
