#!/usr/bin/env bash
# Builds telegate and runs the whole test suite (unit, scenario, example
# and benchmark smoke tests) through CTest, warnings as errors.
#   scripts/test.sh                 # RelWithDebInfo build in build-test/
#   scripts/test.sh --sanitize asan # ASan+UBSan build in build-asan/
#   scripts/test.sh --sanitize tsan # TSan build in build-tsan/
#   scripts/test.sh --clang         # the same with clang, in build-clang/
set -euo pipefail
cd "$(dirname "$0")/.."

type=RelWithDebInfo dir=build-test cc=
case "${1:-}" in
  "") ;;
  --clang) cc=clang dir=build-clang ;;
  --sanitize)
    case "${2:-}" in
      asan) type=Asan dir=build-asan ;;
      tsan) type=Tsan dir=build-tsan ;;
      *) echo "test.sh: --sanitize wants asan or tsan" >&2; exit 2 ;;
    esac ;;
  *) echo "usage: scripts/test.sh [--sanitize asan|tsan | --clang]" >&2; exit 2 ;;
esac

bash scripts/deps.sh
# playwright-core for the browser test, exactly as locked (npm registry).
[ -d tests/browser/node_modules/playwright-core ] || npm ci --prefix tests/browser --no-audit --no-fund >/dev/null
CC=${cc:-${CC:-cc}} cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE="$type" -DTG_WERROR=ON >/dev/null
cmake --build "$dir" -j "$(nproc)"
# halt_on_error keeps UBSan findings fatal; TSan's second_deadlock_stack
# makes its lock reports readable.
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export TSAN_OPTIONS=second_deadlock_stack=1:halt_on_error=1
cd "$dir" && ctest --output-on-failure -j "$(nproc)"
