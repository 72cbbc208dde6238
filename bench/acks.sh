#!/usr/bin/env bash
# bench/acks.sh - what acknowledgements cost telegate serve (SQLite), with
# bench/ackgen.c: the neutral generator's lines, K connections, written by
# one thread each, with or without a hello asking for acks.
#
#   bench/acks.sh                 # both parts below, median of 3
#   bench/acks.sh --runs 5 --n 4000000
#
# 1. Throughput: N readings as fast as the generator writes them, acks off
#    and on, alternating in one run. The committed rate is serve's own:
#    from the generator's first byte to serve's last commit. With acks, the
#    acked rate runs to the last ack the generator read.
# 2. Latency: 100,000 readings/s for 10 s with acks, at the default batch
#    settings (1,000 readings or 1 s): from the moment a reading's chunk
#    was handed to the kernel to the ack that covers it, p50 / p99 / max.
#
# Environment: BUILD (default build-release), PORT (a random one), WORKERS (2).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
build=${BUILD:-$root/build-release}
port=${PORT:-$((20000 + RANDOM % 30000))}
workers=${WORKERS:-2}
n=2000000
runs=3
k=7
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift ;;
    --n) n=$2; shift ;;
    *) echo "usage: bench/acks.sh [--runs R] [--n N]" >&2; exit 2 ;;
  esac
  shift
done

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target telegate -j "$(nproc)" >/dev/null
cc -O2 -pthread -o "$build/ackgen" "$here/ackgen.c" -lssl -lcrypto
telegate=$build/src/telegate
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# One run: serve, the generator with the given flags, SIGTERM; prints
# "committed_rate acked_rate p50 p99 max" (acked figures "-" without acks).
run() {
  rm -f "$work"/bench.db*
  "$telegate" serve --listen-devices "127.0.0.1:$port" --db "$work/bench.db" --workers "$workers" --quiet \
    --summary-json "$work/summary.json" --drain-ms 600000 >"$work/serve.log" 2>&1 &
  local spid=$!
  for _ in $(seq 100); do
    ss -ltn "sport = :$port" | grep -q LISTEN && break
    sleep 0.05
  done
  "$build/ackgen" -p "$port" -k "$k" -d 1000 "$@" >"$work/gen.txt" || { echo "acks.sh: ackgen failed" >&2; cat "$work/gen.txt" >&2; exit 1; }
  kill -TERM "$spid"
  wait "$spid" || { echo "acks.sh: serve failed" >&2; cat "$work/serve.log" >&2; exit 1; }
  python3 - "$work/summary.json" "$work/gen.txt" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
g = dict(l.strip().split("=", 1) for l in open(sys.argv[2]) if "=" in l)
n, start = int(g["sent"]), int(g["start_epoch_ns"])
assert s["db_rows"] == n and s["lossless"], f"{s['db_rows']} rows of {n}"
committed = n / ((s["last_commit_unix_ns"] - start) / 1e9)
if "acked_all" in g:
    assert g["acked_all"] == "1", "not every reading was acked"
    acked = n / ((int(g["ack_done_epoch_ns"]) - start) / 1e9)
    print(f"{committed:.0f} {acked:.0f} {g['ack_p50_ms']} {g['ack_p99_ms']} {g['ack_max_ms']}")
else:
    print(f"{committed:.0f} - - - -")
EOF
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

off=() on=() acked=()
for r in $(seq "$runs"); do
  read -r c _ < <(run -n "$n")
  off+=("$c")
  echo "throughput run $r, acks off: $c readings/s committed" >&2
  read -r c a _ < <(run -n "$n" -a)
  on+=("$c") acked+=("$a")
  echo "throughput run $r, acks on:  $c readings/s committed, $a acked" >&2
done
p50s=() p99s=() maxs=()
for r in $(seq "$runs"); do
  read -r _ _ p50 p99 max < <(run -n 1000000 -r 100000 -a)
  p50s+=("$p50") p99s+=("$p99") maxs+=("$max")
  echo "latency run $r at 100,000/s: p50 $p50 ms, p99 $p99 ms, max $max ms" >&2
done
m_off=$(printf '%s\n' "${off[@]}" | median) m_on=$(printf '%s\n' "${on[@]}" | median)
echo
echo "N = $n readings, K = $k connections of 1,000 devices, $workers workers, SQLite, median of $runs"
echo
echo "| acks | committed readings/s | acked readings/s |"
echo "|---|---:|---:|"
echo "| off | $m_off | - |"
echo "| on | $m_on | $(printf '%s\n' "${acked[@]}" | median) |"
echo
awk -v a="$m_on" -v b="$m_off" 'BEGIN {printf "acks on / off: %.3f\n", a / b}'
echo
echo "Reading-to-ack latency at 100,000 readings/s (batches of 1,000 or 1 s): p50 $(printf '%s\n' "${p50s[@]}" | median) ms, p99 $(printf '%s\n' "${p99s[@]}" | median) ms, max $(printf '%s\n' "${maxs[@]}" | median) ms"
