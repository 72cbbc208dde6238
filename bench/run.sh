#!/usr/bin/env bash
# Builds tg-bench in Release with LTO (in build-release/ at the root)
# and compares it with the tokio and Go peers on the ten workloads of
# ../shared/bench/WORKLOADS.md, in one run: ../shared/bench/compare.sh with
# PROJECT_BENCH pointing at tg-bench. Arguments go to compare.sh; the
# default is --reps 5 (median of 5), both thread counts, scale 1.
#
#   bash bench/run.sh                       # everything, median of 5
#   bash bench/run.sh --only "W1 W9" --threads 2 --reps 7
#
# Environment: TG_BUILD (build directory, default <root>/build-release),
# TG_COMPARE (compare.sh, default <root>/../shared/bench/compare.sh),
# PEERS_BUILD (where compare.sh builds the peers, default /tmp/tg-peers).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BUILD=${TG_BUILD:-$ROOT/build-release}
COMPARE=${TG_COMPARE:-$ROOT/../shared/bench/compare.sh}

[ -f "$COMPARE" ] || { echo "run.sh: no compare.sh at $COMPARE (set TG_COMPARE)" >&2; exit 2; }

# Release with link-time optimisation, as the tokio peer is built (lto,
# codegen-units = 1): libtg's calls inline into the program's.
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INTERPROCEDURAL_OPTIMIZATION=ON >/dev/null
cmake --build "$BUILD" --target tg-bench -j "$(nproc)" >/dev/null

case " $* " in
  *" --reps "*) ;;
  *) set -- --reps 5 "$@" ;;
esac
PROJECT_BENCH="$BUILD/bench/tg-bench" exec bash "$COMPARE" "$@"
