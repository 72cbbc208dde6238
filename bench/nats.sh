#!/usr/bin/env bash
# bench/nats.sh - committed readings/s through NATS JetStream into SQLite
# against the same readings over the device port (TCP), in one run.
#
#   bench/nats.sh                 # N = 200,000 readings, 1,000 devices
#   bench/nats.sh --quick         # N = 50,000
#   bench/nats.sh --n N --devices D --inflight W
#
# NATS: a nats-server of its own (JetStream, file storage in a temporary
# directory); bench/natspub.c publishes the N readings first (to
# telemetry.<device>, JSON without a device; one reading a message, then
# in a second run 10, as a device that batches would) and waits until
# JetStream stored them all; then telegate serve --nats drains the stream
# into SQLite, acking each message after its commit. Its rate is taken
# from serve's own timestamps: the first message fetched to the last
# batch committed (the summary JSON), so the connect is not in it.
#
# TCP: bench/ackgen.c writes the same number of JSON readings over 10
# connections of 100 devices each as fast as serve reads them; the rate
# is from ackgen's start to the last batch committed.
#
# Both runs use serve's defaults (batches of 1,000 or 1 s, one worker,
# SQLite with --durability normal) on a fresh database, and check that the
# database holds every reading and the run was lossless.
# Environment: BUILD (default build-release).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
build=${BUILD:-$root/build-release}
n=200000
devices=1000
inflight=2000
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) n=50000 ;;
    --n) n=$2; shift ;;
    --devices) devices=$2; shift ;;
    --inflight) inflight=$2; shift ;;
    *) echo "usage: bench/nats.sh [--quick] [--n N] [--devices D] [--inflight W]" >&2; exit 2 ;;
  esac
  shift
done
command -v nats-server >/dev/null || { echo "nats.sh: needs nats-server (Debian package nats-server)" >&2; exit 1; }
pkg-config --exists libnats || { echo "nats.sh: needs libnats (Debian package libnats-dev)" >&2; exit 1; }
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target telegate -j "$(nproc)" >/dev/null
telegate=$build/src/telegate
work=$(mktemp -d)
cc -O2 -o "$work/natspub" "$here/natspub.c" $(pkg-config --cflags --libs libnats)
cc -O2 -pthread -o "$work/ackgen" "$here/ackgen.c" -lssl -lcrypto
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

per=$((n / devices))
n=$((per * devices))
nport=$((20000 + RANDOM % 10000)) dport=$((30000 + RANDOM % 10000)) hport=$((40000 + RANDOM % 10000))
nats-server -js -a 127.0.0.1 -p "$nport" -sd "$work/js" >"$work/nats.log" 2>&1 &
pids+=($!)
for _ in $(seq 500); do (exec 3<>/dev/tcp/127.0.0.1/$nport) 2>/dev/null && break; sleep 0.01; done

# serve with more flags, its summary JSON to $1; its pid in $spid.
serve_start() {
  local summary=$1
  shift
  rm -f "$work"/bench.db*
  "$telegate" serve --listen-devices "127.0.0.1:$dport" --listen-http "127.0.0.1:$hport" --db "$work/bench.db" \
    --health-interval-ms 0 --quiet --summary-json "$summary" "$@" >"$work/serve.log" 2>&1 &
  spid=$!
  pids+=($spid)
  for _ in $(seq 500); do (exec 3<>/dev/tcp/127.0.0.1/$hport) 2>/dev/null && break; sleep 0.01; done
}
# Polls /metrics until the N readings are stored, then SIGTERM.
wait_stored() {
  local stored=0
  for _ in $(seq 60000); do
    stored=$(curl -s "http://127.0.0.1:$hport/metrics" | awk '$1 == "telegate_readings_stored_total" { print $2 }')
    [ "${stored:-0}" -ge "$n" ] && break
    sleep 0.01
  done
  kill -TERM "$spid"
  wait "$spid" || { echo "nats.sh: serve failed" >&2; cat "$work/serve.log" >&2; exit 1; }
}
rate() { # summary JSON, start unix ns (0: the summary's first byte)
  python3 - "$1" "$2" "$n" <<'EOF'
import json, sys
s, start, n = json.load(open(sys.argv[1])), int(sys.argv[2]), int(sys.argv[3])
assert s["db_rows"] == n and s["lossless"], f"{s['db_rows']} rows of {n}"
start = start or s["first_byte_unix_ns"]
print(f"{n / ((s['last_commit_unix_ns'] - start) / 1e9):.0f}")
EOF
}

# The N readings, `lines` a message, in a stream of their own (t<lines>),
# drained by serve; prints the rate.
nats_run() {
  local lines=$1
  echo "nats.sh: publishing $n readings ($devices devices x $per, $lines a message) to JetStream on $nport" >&2
  "$work/natspub" "nats://127.0.0.1:$nport" "$n" "$devices" "$lines" "t$lines" >"$work/pub.txt"
  echo "nats.sh: $(tr '\n' ' ' <"$work/pub.txt")" >&2
  serve_start "$work/nats.json" --nats "nats://127.0.0.1:$nport" --nats-inflight "$inflight" \
    --nats-stream "t$lines" --nats-subject "t$lines"
  wait_stored
  rate "$work/nats.json" 0
}
nats_rate=$(nats_run 1)
nats10_rate=$(nats_run 10)

serve_start "$work/tcp.json"
"$work/ackgen" -p "$dport" -k 10 -d $((devices / 10 > 0 ? devices / 10 : 1)) -n "$n" >"$work/gen.txt"
wait_stored
tcp_rate=$(rate "$work/tcp.json" "$(awk -F= '$1 == "start_epoch_ns" { print $2 }' "$work/gen.txt")")

echo
echo "N = $n readings of $devices devices into SQLite, serve's defaults; --nats-inflight $inflight"
echo
echo "| input | committed readings/s |"
echo "|---|---:|"
echo "| NATS JetStream, 1 reading a message (stream drained, ack after commit) | $nats_rate |"
echo "| NATS JetStream, 10 readings a message | $nats10_rate |"
echo "| device port, TCP (10 connections, ackgen) | $tcp_rate |"
echo
awk -v a="$nats_rate" -v a10="$nats10_rate" -v b="$tcp_rate" \
  'BEGIN { printf "NATS / TCP: %.2f with 1 reading a message, %.2f with 10\n", a / b, a10 / b }'
