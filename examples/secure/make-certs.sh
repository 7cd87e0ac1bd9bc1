#!/usr/bin/env bash
# Makes a private CA and a server certificate for localhost and 127.0.0.1, for
# examples/secure/vane.toml:
#
#   certs/ca.pem       the CA certificate: clients trust it (mosquitto_sub --cafile certs/ca.pem)
#   certs/ca.key       the CA's private key (keep it private; needed only to sign again)
#   certs/server.pem   the server certificate, signed by the CA
#   certs/server.key   the server's private key
#
# The certificates are written next to this script, whatever the working directory. Files that
# already exist are kept, so running it again changes nothing; delete certs/ to start over.
# EC P-256 keys; the CA is valid ten years, the server certificate one year.

set -euo pipefail

DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/certs
mkdir -p "$DIR"
cd "$DIR"
umask 077

if [ ! -s ca.pem ] || [ ! -s ca.key ]; then
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
        -subj "/CN=Vane example CA" -keyout ca.key -out ca.pem \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    rm -f server.pem server.key # signed by an older CA
    echo "made $DIR/ca.pem"
fi

if [ ! -s server.pem ] || [ ! -s server.key ]; then
    printf '%s\n' "basicConstraints=CA:FALSE" \
        "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        "extendedKeyUsage=serverAuth" >server.ext
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 365 \
        -extfile server.ext -out server.pem 2>/dev/null
    rm -f server.csr server.ext ca.srl
    echo "made $DIR/server.pem for localhost and 127.0.0.1"
fi
# Readable by the broker's user only; the CA certificate is public.
chmod 644 ca.pem server.pem
echo "certificates in $DIR: ca.pem (give it to clients), server.pem, server.key"
