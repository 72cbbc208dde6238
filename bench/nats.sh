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
#
# Scale (unless --no-scale; --scale-only runs only it): the N readings through 1, 2 and 3 nodes
# into one PostgreSQL (a server of its own, bench/pg-server.sh), each
# node with its share of 6 partitions (the NATS server's partition
# mapping, --nats-partitions 6), one reading a message and then 10. The
# nodes start on an empty stream and first share the partitions out;
# then natspub publishes while they consume, and the rate is from the
# first publish to the last commit of any node. Each run checks that
# PostgreSQL holds every reading exactly once, and reports the CPU
# seconds of each component over the run: nats-server, each node,
# PostgreSQL (all its processes) and natspub.
# Environment: BUILD (default build-release).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
build=${BUILD:-$root/build-release}
n=200000
devices=1000
inflight=2000
scale=1
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) n=50000 ;;
    --n) n=$2; shift ;;
    --devices) devices=$2; shift ;;
    --inflight) inflight=$2; shift ;;
    --no-scale) scale=0 ;;
    --scale-only) scale=only ;;
    *) echo "usage: bench/nats.sh [--quick] [--n N] [--devices D] [--inflight W] [--no-scale | --scale-only]" >&2; exit 2 ;;
  esac
  shift
done
command -v nats-server >/dev/null || { echo "nats.sh: needs nats-server (Debian package nats-server)" >&2; exit 1; }
pkg-config --exists libnats || { echo "nats.sh: needs libnats (Debian package libnats-dev)" >&2; exit 1; }
. "$here/lib.sh"
. "$here/pg-server.sh"
bench_build
bench_workdir
trap 'bench_stop; pg_stop; rm -rf "$work"' EXIT
cc -O2 -o "$work/natspub" "$here/natspub.c" $(pkg-config --cflags --libs libnats)
cc -O2 -pthread -o "$work/ackgen" "$here/ackgen.c" -lssl -lcrypto

per=$((n / devices))
n=$((per * devices))
nport=$((20000 + RANDOM % 10000)) dport=$((30000 + RANDOM % 10000)) hport=$((40000 + RANDOM % 10000))
# The scale runs' streams, s<lines>n<nodes>, are partitioned by the
# server's mapping; t1 and t10 are not.
{
  echo "listen: 127.0.0.1:$nport"
  echo "jetstream { store_dir: \"$work/js\" }"
  echo "mappings = {"
  for l in 1 10; do for k in 1 2 3; do echo "  \"s${l}n$k.*\": \"s${l}n$k.{{partition(6,1)}}.{{wildcard(1)}}\""; done; done
  echo "}"
} >"$work/nats.conf"
nats-server -c "$work/nats.conf" >"$work/nats.log" 2>&1 &
nats_pid=$!
pids+=($nats_pid)
bench_wait_port "$nport"

# serve with more flags, its summary JSON to $1; its pid in $spid.
serve_start() {
  local summary=$1
  shift
  rm -f "$work"/bench.db*
  "$telegate" serve --listen-devices "127.0.0.1:$dport" --listen-http "127.0.0.1:$hport" --db "$work/bench.db" \
    --health-interval-ms 0 --quiet --summary-json "$summary" "$@" >"$work/serve.log" 2>&1 &
  spid=$!
  pids+=($spid)
  bench_wait_port "$hport"
}
# Polls /metrics until the N readings are stored, then SIGTERM.
wait_stored() {
  local stored=0
  for _ in $(seq 60000); do
    stored=$(curl -s "http://127.0.0.1:$hport/metrics" | awk '$1 == "telegate_readings_stored_total" { print $2 }')
    [ "${stored:-0}" -ge "$n" ] && break
    kill -0 "$spid" 2>/dev/null || break # serve ended (it could not start): said below
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
if [ "$scale" != only ]; then
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
fi
[ "$scale" != 0 ] || exit 0

chmod a+rx "$work"
pg_start "$work/pg" $((nport + 1))
metric() { # port name: the figure in that node's /metrics
  curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m { print $2 }'
}
# `nodes` nodes drain what natspub publishes, `lines` readings a message:
# prints "rate nats_cpu node_cpus(a+b+c) pg_cpu pub_cpu".
scale_run() {
  local lines=$1 nodes=$2 name=s$1n$2 k
  pg_sql -c "DROP TABLE IF EXISTS readings, device_hwm, mark_log"
  local spids=()
  for k in $(seq "$nodes"); do
    "$telegate" serve --listen-devices "127.0.0.1:$((dport + k))" --listen-http "127.0.0.1:$((hport + k))" \
      --storage postgres --db "$pg_uri" --nats "nats://127.0.0.1:$nport" --nats-partitions 6 --nats-lease-ms 2000 \
      --nats-stream "$name" --nats-subject "$name" --nats-consumer "c$name" --nats-inflight "$inflight" --node "$name-$k" \
      --health-interval-ms 0 --summary-json "$work/$name-$k.json" >"$work/$name-$k.log" 2>&1 &
    spids+=($!)
    pids+=($!)
  done
  # Until the partitions are shared out: 6 / nodes each.
  local held
  for _ in $(seq 3000); do
    held=0
    for k in $(seq "$nodes"); do [ "$(metric $((hport + k)) telegate_nats_partitions_held)" = $((6 / nodes)) ] && held=$((held + 1)); done
    [ "$held" = "$nodes" ] && break
    sleep 0.01
  done
  [ "$held" = "$nodes" ] || { echo "nats.sh: the partitions were not shared out over $nodes nodes" >&2; tail -n 5 "$work/$name"-*.log >&2; exit 1; }
  local nats0 pg0 node0=() start
  nats0=$(proc_cpu "$nats_pid") pg0=$(pg_cpu)
  for p in "${spids[@]}"; do node0+=("$(proc_cpu "$p")"); done
  start=$(date +%s%N)
  /usr/bin/time -f "%U %S" -o "$work/pub.time" "$work/natspub" "nats://127.0.0.1:$nport" "$n" "$devices" "$lines" "$name" \
    >"$work/pub.txt"
  local stored=0
  for _ in $(seq 60000); do
    stored=0
    for k in $(seq "$nodes"); do stored=$((stored + $(metric $((hport + k)) telegate_readings_stored_total))); done
    [ "$stored" -ge "$n" ] && break
    sleep 0.01
  done
  local cpus=() i=0
  for p in "${spids[@]}"; do cpus+=("$(awk -v a="$(proc_cpu "$p")" -v b="${node0[$i]}" 'BEGIN {printf "%.2f", a - b}')"); i=$((i + 1)); done
  local nats_cpu pg_cpu_run
  nats_cpu=$(awk -v a="$(proc_cpu "$nats_pid")" -v b="$nats0" 'BEGIN {printf "%.2f", a - b}')
  pg_cpu_run=$(awk -v a="$(pg_cpu)" -v b="$pg0" 'BEGIN {printf "%.2f", a - b}')
  for p in "${spids[@]}"; do kill -TERM "$p"; done
  for p in "${spids[@]}"; do wait "$p" || { echo "nats.sh: a node failed" >&2; cat "$work/$name"-*.log >&2; exit 1; }; done
  local rows
  rows=$(pg_sql -At -c "SELECT count(*) FROM readings")
  [ "$rows" = "$n" ] && [ "$(pg_sql -At -c "SELECT count(*) FROM (SELECT DISTINCT device, seq FROM readings) d")" = "$n" ] ||
    { echo "nats.sh: PostgreSQL holds $rows rows of $n" >&2; exit 1; }
  python3 - "$start" "$work/pub.time" "$nats_cpu" "$pg_cpu_run" "$n" "${cpus[*]}" "$work/$name"-*.json <<'EOF'
import json, sys
start, pub, nats, pg, n, cpus = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6]
end = max(json.load(open(f))["last_commit_unix_ns"] for f in sys.argv[7:])
pub_cpu = sum(float(x) for x in open(pub).read().split()[-2:])
print(f"{n / ((end - start) / 1e9):.0f} {nats} {'+'.join(cpus.split())} {pg} {pub_cpu:.2f}")
EOF
}
rows=()
for lines in 1 10; do
  for nodes in 1 2 3; do
    scale_run "$lines" "$nodes" >"$work/scale.txt" # not in a subshell: its nodes go into pids
    read -r rate nats_cpu node_cpu pg_cpu_run pub_cpu <"$work/scale.txt"
    echo "nats.sh: $lines a message, $nodes nodes: $rate readings/s" >&2
    rows+=("| $lines | $nodes | $rate | $nats_cpu | $node_cpu | $pg_cpu_run | $pub_cpu |")
  done
done
echo
echo "Scale: N = $n readings of $devices devices through NATS JetStream (6 partitions) into one PostgreSQL," \
  "$(nproc) cores; from the first publish to the last commit"
echo
echo "| readings a message | nodes | committed readings/s | CPU s: nats-server | telegate nodes | PostgreSQL | natspub |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
