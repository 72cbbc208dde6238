#!/usr/bin/env bash
# Installs the Debian 12 packages telegate builds and tests with, if any
# is missing. Installing needs root or sudo, and on a fresh machine takes
# a few minutes (Chromium and its libraries are most of it); with
# everything present it does nothing and needs neither.
set -euo pipefail

PACKAGES=(
  build-essential clang cmake pkg-config
  libuv1-dev libboost-context-dev libsqlite3-dev sqlite3
  libpq-dev           # the PostgreSQL storage backend (--storage postgres)
  postgresql          # its tests and bench/ingest.sh start a server of their own (initdb, postgres, psql)
  libcjson-dev libhttp-parser-dev libinih-dev libssl-dev zlib1g-dev
  openssl             # the TLS tests make their certificates with it
  mosquitto mosquitto-clients python3-paho-mqtt  # the MQTT tests and bench/mqtt.sh: a real broker and publishers
  libnats-dev         # the NATS JetStream source (--nats)
  nats-server         # its tests and bench/nats.sh start a server of their own, with JetStream
  check time
  chromium            # the dashboard's browser test
  curl                # the install test reads /metrics
  python3-influxdb    # the write API's test uses InfluxDB's own client
  groff-base man-db   # the install test renders the man pages
  systemd procps      # systemd-analyze verify of the unit and its ExecReload=kill (no need to run systemd)
)
# promtool checks /metrics; only the tool is wanted, not the
# node exporter Debian recommends with it.
PACKAGES_NO_RECOMMENDS=(prometheus)
# Node.js drives Chromium in the browser test; any Debian-packaged or
# newer node will do, so only install Debian's when there is none.
command -v node >/dev/null && command -v npm >/dev/null || PACKAGES+=(nodejs npm)

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=() missing_nr=()
for p in "${PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
for p in "${PACKAGES_NO_RECOMMENDS[@]}"; do installed "$p" || missing_nr+=("$p"); done
[ $((${#missing[@]} + ${#missing_nr[@]})) -eq 0 ] && exit 0

say() { echo "deps.sh: $*" >&2; }
sudo=
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || {
    say "missing ${missing[*]} ${missing_nr[*]}; installing them needs root: run this as root, or install sudo"
    exit 1
  }
  sudo=sudo
  say "installing packages as root through sudo"
fi

# apt's own output, one line per package fetched and set up, so a long
# install shows it is moving.
progress() {
  awk '/^Get:[0-9]+ / {print "deps.sh:   fetched " $5; fflush()}
       /^Setting up / {print "deps.sh:   set up " $3; fflush()}' >&2
}
apt_install() {
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "$@" | progress
}

say "missing: ${missing[*]} ${missing_nr[*]}"
say "apt-get update"
$sudo apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
  say "apt-get install ${missing[*]} (with their dependencies; a few minutes on a fresh machine)"
  apt_install "${missing[@]}"
fi
if [ ${#missing_nr[@]} -gt 0 ]; then
  say "apt-get install --no-install-recommends ${missing_nr[*]}"
  apt_install --no-install-recommends "${missing_nr[@]}"
fi
say "done"
