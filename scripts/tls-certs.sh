#!/usr/bin/env bash
# Makes a throwaway certificate authority and certificates signed by it,
# for trying TLS and for the tests and benchmarks; not for production.
#   scripts/tls-certs.sh DIR [NAME ...]
# DIR/ca.pem and DIR/ca.key are made once (kept if present); each NAME
# (default: server client) gets DIR/NAME.pem and DIR/NAME.key with CN=NAME,
# valid for localhost, 127.0.0.1 and ::1, for two days. Keys are P-256.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: tls-certs.sh DIR [NAME ...]" >&2; exit 2; }
dir=$1
shift
[ $# -gt 0 ] || set -- server client
mkdir -p "$dir"
cd "$dir"
key=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
if [ ! -f ca.pem ]; then
  openssl req -x509 "${key[@]}" -days 2 -subj "/CN=telegate test CA" -keyout ca.key -out ca.pem 2>/dev/null
fi
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth,clientAuth\n' >names.ext
for name in "$@"; do
  openssl req "${key[@]}" -subj "/CN=$name" -keyout "$name.key" -out "$name.csr" 2>/dev/null
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile names.ext \
    -out "$name.pem" 2>/dev/null
  rm -f "$name.csr"
done
rm -f names.ext ca.srl
