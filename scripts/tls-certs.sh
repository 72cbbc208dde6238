#!/usr/bin/env bash
# Makes a throwaway certificate authority and certificates signed by it,
# for trying TLS and for the tests and benchmarks; not for production.
#   scripts/tls-certs.sh DIR [NAME ...]
# DIR/ca.pem and DIR/ca.key are made once (kept if present); each NAME
# (default: server client) gets DIR/NAME.pem and DIR/NAME.key with CN=NAME,
# valid for localhost, 127.0.0.1 and ::1, for two days. Keys are P-256.
#   scripts/tls-certs.sh DIR --crl [NAME ...]
# writes DIR/crl.pem, the CA's revocation list, revoking the certificates
# of the NAMEs given (none: an empty list); revocations add up across calls.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: tls-certs.sh DIR [NAME ...] | DIR --crl [NAME ...]" >&2; exit 2; }
dir=$1
shift
mkdir -p "$dir"
cd "$dir"
if [ "${1:-}" = --crl ]; then
  shift
  [ -f ca.pem ] || { echo "tls-certs.sh: no CA in $dir yet" >&2; exit 1; }
  touch ca.index
  [ -f ca.crlnumber ] || echo 01 >ca.crlnumber
  printf '[ca]\ndefault_ca=d\n[d]\ndatabase=ca.index\ncrlnumber=ca.crlnumber\ndefault_md=sha256\ndefault_crl_days=2\n' >ca.cnf
  for name in "$@"; do
    openssl ca -config ca.cnf -keyfile ca.key -cert ca.pem -revoke "$name.pem" 2>/dev/null
  done
  openssl ca -config ca.cnf -keyfile ca.key -cert ca.pem -gencrl -out crl.pem 2>/dev/null
  rm -f ca.cnf
  exit 0
fi
[ $# -gt 0 ] || set -- server client
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
