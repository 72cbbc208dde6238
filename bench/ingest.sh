#!/usr/bin/env bash
# bench/ingest.sh - telegate serve's ingest rate, measured with the neutral
# load generator of ../shared/bench/ingest (tcpgen), as its README asks:
# the receiver's figure, from the first byte to the last reading
# aggregated (--storage none) or committed (--storage sqlite), with the
# receiver's CPU time and peak RSS (/usr/bin/time -v) and its idle RSS.
#
#   bench/ingest.sh                  # the full table: N = 10,000,000, K = 1, 7, 1000, none and sqlite
#   bench/ingest.sh --quick          # N = 1,000,000, K = 7 only (a smoke run)
#   bench/ingest.sh --runs 3         # median of 3 per case (default 1)
#   bench/ingest.sh --case none:7    # one case, storage:K
#
# Environment: BUILD (default build-release), PORT (a random one), WORKERS (2),
# SERVE_FLAGS (extra flags for serve), FORMAT (json | line).
#
# tcpgen never reads its socket and closes it as soon as its last write
# returns, with bytes still on the way; anything serve wrote to it then
# would make tcpgen's kernel reset the connection and drop those bytes
# (TCP's abort-on-data). Serve writes nothing to it: health requests go
# only to devices whose hello says they answer them, and tcpgen sends no
# hello, so the health rounds stay on at their default.
#
# tcpgen's last write returns long before serve has read everything: with
# 1,000 connections the kernel's socket buffers hold hundreds of MB. The
# SIGTERM that follows must not cut that short, so the drain may last
# (--drain-ms 600000): it still ends as soon as every connection reached
# its end. The rate is taken from serve's own timestamps of the last
# reading aggregated or committed, which the shutdown does not move.
# Prints one line per run and a Markdown table at the end.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
shared=$(cd "$root/../shared/bench/ingest" && pwd)
build=${BUILD:-$root/build-release}
port=${PORT:-$((20000 + RANDOM % 30000))} # not a well-known one: other programs' devices must not join in
workers=${WORKERS:-2}
format=${FORMAT:-json}
n=10000000
runs=1
cases="none:1 none:7 none:1000 sqlite:1 sqlite:7 sqlite:1000"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) n=1000000; cases="none:7 sqlite:7" ;;
    --runs) runs=$2; shift ;;
    --n) n=$2; shift ;;
    --case) cases=$2; shift ;;
    *) echo "usage: bench/ingest.sh [--quick] [--runs R] [--n N] [--case storage:K]" >&2; exit 2 ;;
  esac
  shift
done

[ -x /usr/bin/time ] || { echo "ingest.sh: needs /usr/bin/time (Debian package 'time')" >&2; exit 1; }
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target telegate -j "$(nproc)" >/dev/null
cc -O2 -pthread -o "$build/tcpgen" "$shared/tcpgen.c"
telegate=$build/src/telegate
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Devices per connection: tcpgen's README example (1000) for few
# connections; for 1,000 connections 10 each (10,000 devices in all).
devices_for() { [ "$1" -ge 1000 ] && echo 10 || echo 1000; }

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

run_case() { # storage K -> prints "rate cpu_per_M peak_kb idle_kb"
  local storage=$1 k=$2 d
  d=$(devices_for "$k")
  rm -f "$work"/bench.db*
  /usr/bin/time -v -o "$work/time.txt" "$telegate" serve --listen-devices "127.0.0.1:$port" \
    --storage "$storage" --db "$work/bench.db" --workers "$workers" --quiet \
    --summary-json "$work/summary.json" --drain-ms 600000 ${SERVE_FLAGS:-} >"$work/serve.log" 2>&1 &
  local tpid=$! spid=""
  for _ in $(seq 100); do
    spid=$(pgrep -P "$tpid" telegate || true)
    [ -n "$spid" ] && ss -ltn "sport = :$port" | grep -q LISTEN && break
    sleep 0.05
  done
  [ -n "$spid" ] || { echo "ingest.sh: serve did not start" >&2; cat "$work/serve.log" >&2; exit 1; }
  sleep 1
  local idle
  idle=$(rss_kb "$spid")
  "$build/tcpgen" -h 127.0.0.1 -p "$port" -k "$k" -n "$n" -d "$d" -f "$format" >"$work/gen.txt"
  local start
  start=$(sed -n 's/^start_epoch_ns=//p' "$work/gen.txt")
  # tcpgen has closed every connection: serve reads them to the end, then
  # the shutdown drains and commits (the timestamps are taken before).
  kill -TERM "$spid"
  wait "$tpid" || { echo "ingest.sh: serve failed" >&2; cat "$work/serve.log" >&2; exit 1; }
  python3 - "$work/summary.json" "$work/time.txt" "$start" "$n" "$storage" "$idle" "$k" <<'EOF'
import json, re, sys
summary, timef, start, n, storage, idle, k = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6]), int(sys.argv[7])
s = json.load(open(summary))
assert s["connections_accepted"] == k, f"{s['connections_accepted']} connections, not {k}: someone else connected"
t = open(timef).read()
user = float(re.search(r"User time \(seconds\): ([\d.]+)", t).group(1))
syst = float(re.search(r"System time \(seconds\): ([\d.]+)", t).group(1))
peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1))
end = s["last_commit_unix_ns"] if storage == "sqlite" else s["last_aggregated_unix_ns"]
assert s["readings_received"] == n, f"received {s['readings_received']} of {n}"
assert s["lossless"], "serve reports a loss"
if storage == "sqlite":
    assert s["db_rows"] == n, f"{s['db_rows']} rows of {n}"
rate = n / ((end - start) / 1e9)
print(f"{rate:.0f} {(user + syst) / (n / 1e6):.2f} {peak} {idle} {user + syst:.2f}")
EOF
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

results=()
for c in $cases; do
  storage=${c%%:*}; k=${c##*:}
  rates=() cpus=() peaks=() idles=()
  for r in $(seq "$runs"); do
    read -r rate cpu peak idle total < <(run_case "$storage" "$k")
    echo "storage=$storage K=$k run=$r: $rate readings/s, $cpu CPU s per M ($total s), peak RSS $peak KiB, idle RSS $idle KiB" >&2
    rates+=("$rate"); cpus+=("$cpu"); peaks+=("$peak"); idles+=("$idle")
  done
  peak=$(printf '%s\n' "${peaks[@]}" | median) idle=$(printf '%s\n' "${idles[@]}" | median)
  results+=("| $storage | $k | $(devices_for "$k") | $(printf '%s\n' "${rates[@]}" | median) | $(printf '%s\n' "${cpus[@]}" | median) | $(awk -v k="$peak" 'BEGIN {printf "%.1f", k / 1024}') MiB | $(awk -v k="$idle" 'BEGIN {printf "%.1f", k / 1024}') MiB |")
done
echo
echo "N = $n readings, $workers workers, format $format, median of $runs"
echo
echo "| storage | K | devices/conn | readings/s | CPU s per M | peak RSS | idle RSS |"
echo "|---|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${results[@]}"
