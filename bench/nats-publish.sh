#!/usr/bin/env bash
# bench/nats-publish.sh - readings/s through the device port of a cluster
# node (TCP -> telegate -> JetStream -> telegate's consumer -> SQLite)
# against the local path (TCP -> telegate -> SQLite), in one run.
#
#   bench/nats-publish.sh                 # N = 200,000 readings, 1,000 devices
#   bench/nats-publish.sh --quick         # N = 50,000
#   bench/nats-publish.sh --n N --devices D
#
# Both runs: bench/ackgen.c writes N JSON readings over 10 connections
# (D / 10 devices each) as fast as serve reads them, its hello asking for
# acks, and ends once every device's last reading is acked. One serve
# with its defaults on a fresh SQLite database; with --nats it publishes
# what the device port takes to a nats-server of its own (JetStream, file
# storage in a temporary directory) and consumes it back itself (the one
# node holds the consumer's lease), so both legs run on this machine.
# Two rates each, from ackgen's start: committed (the summary's last
# commit) and acked (ackgen's last ack). Locally an ack means committed;
# through NATS it means in the stream (nats_publish.h), so acks may
# come before the commits. Also the readings a published message carried
# on average. Each run checks that the database holds every reading and
# the run was lossless.
# Environment: BUILD (default build-release).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
build=${BUILD:-$root/build-release}
n=200000
devices=1000
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) n=50000 ;;
    --n) n=$2; shift ;;
    --devices) devices=$2; shift ;;
    *) echo "usage: bench/nats-publish.sh [--quick] [--n N] [--devices D]" >&2; exit 2 ;;
  esac
  shift
done
command -v nats-server >/dev/null || { echo "nats-publish.sh: needs nats-server (Debian package nats-server)" >&2; exit 1; }
. "$here/lib.sh"
bench_build
bench_workdir
cc -O2 -pthread -o "$work/ackgen" "$here/ackgen.c" -lssl -lcrypto

per_conn=$((devices / 10 > 0 ? devices / 10 : 1))
nport=$((20000 + RANDOM % 10000)) dport=$((30000 + RANDOM % 10000)) hport=$((40000 + RANDOM % 10000))
nats-server -js -a 127.0.0.1 -p "$nport" -sd "$work/js" >"$work/nats.log" 2>&1 &
pids+=($!)
bench_wait_port "$nport"

# One run: serve with more flags, ackgen, the rates on stdout as
# "committed acked readings-a-message".
run() {
  local name=$1
  shift
  rm -f "$work"/bench.db*
  "$telegate" serve --listen-devices "127.0.0.1:$dport" --listen-http "127.0.0.1:$hport" --db "$work/bench.db" \
    --health-interval-ms 0 --quiet --summary-json "$work/$name.json" "$@" >"$work/serve-$name.log" 2>&1 &
  local spid=$!
  pids+=($spid)
  bench_wait_port "$hport"
  if [ $# -gt 0 ]; then # with NATS: once the node holds the consumer's lease and its publisher is connected
    for _ in $(seq 1000); do
      curl -s "http://127.0.0.1:$hport/metrics" |
        awk '$1 == "telegate_nats_partitions_held" { h = $2 } $1 == "telegate_nats_publish_connected" { c = $2 }
             END { exit !(h == 1 && c == 1) }' && break
      sleep 0.01
    done
  fi
  "$work/ackgen" -p "$dport" -k 10 -d "$per_conn" -n "$n" -a >"$work/gen-$name.txt"
  local stored=0 metrics
  for _ in $(seq 60000); do
    metrics=$(curl -s "http://127.0.0.1:$hport/metrics")
    stored=$(awk '$1 == "telegate_readings_stored_total" { print $2 }' <<<"$metrics")
    [ "${stored:-0}" -ge "$n" ] && break
    sleep 0.01
  done
  local messages
  messages=$(awk '$1 == "telegate_nats_publish_messages_total" { print $2 }' <<<"$metrics")
  kill -TERM "$spid"
  wait "$spid" || { echo "nats-publish.sh: serve failed" >&2; cat "$work/serve-$name.log" >&2; exit 1; }
  python3 - "$work/$name.json" "$work/gen-$name.txt" "$n" "${messages:-0}" <<'EOF'
import json, sys
s, n, messages = json.load(open(sys.argv[1])), int(sys.argv[3]), int(sys.argv[4])
g = dict(l.strip().split("=", 1) for l in open(sys.argv[2]) if "=" in l)
assert s["db_rows"] == n and s["lossless"], f"{s['db_rows']} rows of {n}"
assert g.get("acked_all") == "1", "not every reading acked"
start = int(g["start_epoch_ns"])
committed = n / ((s["last_commit_unix_ns"] - start) / 1e9)
acked = n / ((int(g["ack_done_epoch_ns"]) - start) / 1e9)
print(f"{committed:.0f} {acked:.0f} {n / messages if messages else 0:.1f}")
EOF
}

echo "nats-publish.sh: local path, $n readings of $devices devices" >&2
read -r local_committed local_acked _ < <(run local)
echo "nats-publish.sh: through JetStream on $nport, the same readings" >&2
read -r nats_committed nats_acked per_message < <(run nats --nats "nats://127.0.0.1:$nport")

echo
echo "N = $n readings of $devices devices over 10 connections (ackgen -a), SQLite, serve's defaults"
echo
echo "| path | committed readings/s | acked readings/s |"
echo "|---|---:|---:|"
echo "| device port -> SQLite (local) | $local_committed | $local_acked |"
echo "| device port -> JetStream -> consumer -> SQLite (--nats, one node) | $nats_committed | $nats_acked |"
echo
echo "readings a published message carried: $per_message"
awk -v a="$nats_committed" -v b="$local_committed" -v c="$nats_acked" -v d="$local_acked" \
  'BEGIN { printf "through NATS / local: %.2f committed, %.2f acked\n", a / b, c / d }'
