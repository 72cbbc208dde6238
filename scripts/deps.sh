#!/usr/bin/env bash
# Installs the Debian 12 packages telegate builds and tests with, if any
# is missing. Needs root (or sudo) only when something must be installed.
set -euo pipefail

PACKAGES=(
  build-essential clang cmake pkg-config
  libuv1-dev libboost-context-dev libsqlite3-dev sqlite3
  libcjson-dev libhttp-parser-dev libinih-dev libssl-dev
  check time
  chromium            # the dashboard's browser test
)
# Node.js drives Chromium in the browser test; any Debian-packaged or
# newer node will do, so only install Debian's when there is none.
command -v node >/dev/null && command -v npm >/dev/null || PACKAGES+=(nodejs npm)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=
[ "$(id -u)" -ne 0 ] && sudo=sudo
echo "deps.sh: installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null

