#!/usr/bin/env bash
# bench/tls.sh - what TLS costs the device port: serve's ingest rate over
# TLS against plain TCP in one run, same build, flags, generator and N,
# plain and TLS cases taking turns so that a machine that gets busier
# midway slows both alike.
#
#   bench/tls.sh                     # N = 5,000,000, K = 7 and 100, storage none, median of 3
#   bench/tls.sh --quick             # N = 1,000,000, K = 7, one run each (a smoke run)
#   bench/tls.sh --n N --k "7 1000" --runs R --storage sqlite
#
# The generator is bench/ackgen.c (the neutral generator's JSON lines,
# K connections, 1000 devices each, or 10 from K = 1000 on), with -t over
# TLS: its handshakes are done before the clock starts, so the rate is
# that of the records, as a long-lived device connection sees it. The
# rate is the receiver's, as bench/ingest.sh takes it: N readings from
# ackgen's start to serve's last reading aggregated (storage none) or
# committed (sqlite), with serve's CPU time per million readings.
# Environment: BUILD (default build-release), PORT (a random one), WORKERS (2),
# PIN (1: serve and the generator on cores of their own, see below).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
build=${BUILD:-$root/build-release}
port=${PORT:-$((20000 + RANDOM % 30000))} # not a well-known one: other programs' devices must not join in
workers=${WORKERS:-2}
n=5000000
ks="7 100"
runs=3
storage=none
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) n=1000000; ks=7; runs=1 ;;
    --n) n=$2; shift ;;
    --k) ks=$2; shift ;;
    --runs) runs=$2; shift ;;
    --storage) storage=$2; shift ;;
    *) echo "usage: bench/tls.sh [--quick] [--n N] [--k \"K ...\"] [--runs R] [--storage none|sqlite]" >&2; exit 2 ;;
  esac
  shift
done

[ -x /usr/bin/time ] || { echo "tls.sh: needs /usr/bin/time (Debian package 'time')" >&2; exit 1; }
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target telegate -j "$(nproc)" >/dev/null
cc -O2 -pthread -o "$build/ackgen" "$here/ackgen.c" -lssl -lcrypto
telegate=$build/src/telegate
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bash "$root/scripts/tls-certs.sh" "$work/certs" server >/dev/null

# PIN=1: serve on the last core, the generator on the others, so that the
# generator's encryption does not take serve's CPU.
serve_cpu=() gen_cpu=()
if [ "${PIN:-0}" = 1 ]; then
  last=$(($(nproc) - 1))
  serve_cpu=(taskset -c "$last") gen_cpu=(taskset -c "0-$((last > 0 ? last - 1 : 0))")
fi

devices_for() { [ "$1" -ge 1000 ] && echo 10 || echo 1000; }

run_case() { # plain|tls K -> prints "rate cpu_per_M"
  local mode=$1 k=$2 tls_flags=() gen_flags=()
  if [ "$mode" = tls ]; then
    tls_flags=(--tls-cert "$work/certs/server.pem" --tls-key "$work/certs/server.key")
    gen_flags=(-t)
  fi
  rm -f "$work"/bench.db*
  /usr/bin/time -v -o "$work/time.txt" ${serve_cpu[@]+"${serve_cpu[@]}"} "$telegate" serve --listen-devices "127.0.0.1:$port" \
    --storage "$storage" --db "$work/bench.db" --workers "$workers" --quiet "${tls_flags[@]}" \
    --summary-json "$work/summary.json" --drain-ms 600000 >"$work/serve.log" 2>&1 &
  local tpid=$! spid=""
  for _ in $(seq 200); do
    spid=$(pgrep -P "$tpid" telegate || true)
    [ -n "$spid" ] && ss -ltn "sport = :$port" | grep -q LISTEN && break
    sleep 0.05
  done
  [ -n "$spid" ] || { echo "tls.sh: serve did not start" >&2; cat "$work/serve.log" >&2; exit 1; }
  ${gen_cpu[@]+"${gen_cpu[@]}"} "$build/ackgen" -p "$port" -k "$k" -n "$n" -d "$(devices_for "$k")" "${gen_flags[@]}" >"$work/gen.txt" ||
    { echo "tls.sh: ackgen failed" >&2; cat "$work/gen.txt" >&2; exit 1; }
  local start
  start=$(sed -n 's/^start_epoch_ns=//p' "$work/gen.txt")
  kill -TERM "$spid"
  wait "$tpid" || { echo "tls.sh: serve failed" >&2; cat "$work/serve.log" >&2; exit 1; }
  python3 - "$work/summary.json" "$work/time.txt" "$start" "$n" "$storage" "$k" "$mode" <<'EOF'
import json, re, sys
summary, timef, start, n, storage, k, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6]), sys.argv[7]
s = json.load(open(summary))
assert s["connections_accepted"] == k, f"{s['connections_accepted']} connections, not {k}: someone else connected"
assert s["readings_received"] == n, f"received {s['readings_received']} of {n}"
assert s["lossless"], "serve reports a loss"
if mode == "tls":
    assert s["tls_handshakes"] == k, f"{s['tls_handshakes']} TLS handshakes, not {k}"
t = open(timef).read()
cpu = float(re.search(r"User time \(seconds\): ([\d.]+)", t).group(1)) + float(re.search(r"System time \(seconds\): ([\d.]+)", t).group(1))
end = s["last_commit_unix_ns"] if storage == "sqlite" else s["last_aggregated_unix_ns"]
print(f"{n / ((end - start) / 1e9):.0f} {cpu / (n / 1e6):.2f}")
EOF
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

results=()
for k in $ks; do
  plain_rates=() tls_rates=() plain_cpus=() tls_cpus=()
  for r in $(seq "$runs"); do
    for mode in plain tls; do
      read -r rate cpu < <(run_case "$mode" "$k")
      echo "K=$k run=$r $mode: $rate readings/s, $cpu CPU s per M" >&2
      if [ "$mode" = plain ]; then plain_rates+=("$rate") plain_cpus+=("$cpu"); else tls_rates+=("$rate") tls_cpus+=("$cpu"); fi
    done
  done
  p=$(printf '%s\n' "${plain_rates[@]}" | median) t=$(printf '%s\n' "${tls_rates[@]}" | median)
  pc=$(printf '%s\n' "${plain_cpus[@]}" | median) tc=$(printf '%s\n' "${tls_cpus[@]}" | median)
  results+=("| $k | $(devices_for "$k") | $p | $t | $(awk -v p="$p" -v t="$t" 'BEGIN {printf "%.0f %%", 100 * t / p}') | $pc | $tc |")
done
echo
echo "N = $n readings, storage $storage, $workers workers, median of $runs, $(nproc) cores$([ "${PIN:-0}" = 1 ] && echo ", serve pinned to one"); $(openssl version)"
echo
echo "| K | devices/conn | plain readings/s | TLS readings/s | TLS / plain | plain CPU s per M | TLS CPU s per M |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${results[@]}"
