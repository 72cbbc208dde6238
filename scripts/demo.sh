#!/usr/bin/env bash
# Builds telegate (Release) and runs the reference scenario:
#   scripts/demo.sh [telegate demo flags...]   e.g. --preset pressure
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-release -j "$(nproc)" --target telegate >/dev/null
exec build-release/src/telegate demo "$@"
