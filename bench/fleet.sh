#!/usr/bin/env bash
# bench/fleet.sh - what the fleet view costs: bytes/s on NATS and CPU of
# the node that publishes and of the node that merges, with D devices
# each sending R readings/s to one node.
#
#   bench/fleet.sh                      # D = 10,000 devices, R = 1 and 4 readings/s
#   bench/fleet.sh --devices D --rates "1 4" --seconds S
#
# One nats-server; node A (telegate serve --nats --storage none) takes
# the devices over TCP (telegate devices, acks off); node B, on the same
# NATS, has no device of its own: everything it shows comes through the
# fleet view. Over S seconds once every device is in B's snapshot: A's
# and B's fleet figures (bytes and device states each way) and each
# process's CPU time (utime + stime from /proc). For the publishing
# side's share, the same load on A alone without --nats (no fleet view,
# no NATS source) gives the baseline.
# Environment: BUILD (default build-release).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
build=${BUILD:-$root/build-release}
devices=10000
rates="1 4"
seconds=20
while [ $# -gt 0 ]; do
  case "$1" in
    --devices) devices=$2; shift ;;
    --rates) rates=$2; shift ;;
    --seconds) seconds=$2; shift ;;
    *) echo "usage: bench/fleet.sh [--devices D] [--rates \"R ...\"] [--seconds S]" >&2; exit 2 ;;
  esac
  shift
done
command -v nats-server >/dev/null || { echo "fleet.sh: needs nats-server (Debian package nats-server)" >&2; exit 1; }
. "$here/lib.sh"
bench_build
bench_workdir

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# CPU seconds (user + system) of a process so far.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m {print $2}'; }
wait_metric_ge() { # port metric value
  for _ in $(seq 1 600); do
    v=$(metric "$1" "$2")
    [ -n "$v" ] && awk -v a="$v" -v b="$3" 'BEGIN{exit !(a >= b)}' && return 0
    sleep 0.1
  done
  echo "fleet.sh: $2 on :$1 never reached $3" >&2
  exit 1
}

nport=$(port)
cat > "$work/nats.conf" <<EOF
listen: 127.0.0.1:$nport
jetstream { store_dir: "$work/js" }
EOF
nats-server -c "$work/nats.conf" > "$work/nats.log" 2>&1 &
nats_pid=$!
pids+=("$nats_pid")
bench_wait_port "$nport"

serve() { # name device-port http-port extra...
  local name=$1 dp=$2 hp=$3
  shift 3
  "$telegate" serve --storage none --max-devices $((devices + 1000)) --max-connections $((devices + 100)) \
    --max-connections-per-client $((devices + 100)) --listen-devices "127.0.0.1:$dp" \
    --listen-http "127.0.0.1:$hp" --health-interval-ms 0 --quiet "$@" > "$work/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 200); do curl -s "http://127.0.0.1:$hp/healthz" > /dev/null && break; sleep 0.05; done
}

printf "%-8s %-6s %12s %12s %14s %10s %10s %10s %12s\n" devices rate "states/s" "bytes/s" "bytes/state" \
  "A cpu %" "A alone %" "B cpu %" "nats cpu %"
for rate in $rates; do
  # With the fleet view: A takes the devices, B only merges.
  ad=$(port) ah=$(port) bd=$(port) bh=$(port)
  serve a "$ad" "$ah" --nats "nats://127.0.0.1:$nport" --node a
  a_pid=${pids[-1]}
  serve b "$bd" "$bh" --nats "nats://127.0.0.1:$nport" --node b
  b_pid=${pids[-1]}
  "$telegate" devices --connect "127.0.0.1:$ad" --count "$devices" --rate "$rate" --duration $((seconds + 60)) \
    --acks off --quiet > "$work/devices.log" 2>&1 &
  dev_pid=$!
  pids+=("$dev_pid")
  wait_metric_ge "$ah" telegate_devices_connected "$devices"
  wait_metric_ge "$bh" telegate_devices_active "$devices" # all of them in B's view
  a0=$(cpu "$a_pid") b0=$(cpu "$b_pid") n0=$(cpu "$nats_pid")
  s0=$(metric "$ah" telegate_fleet_sent_bytes_total) d0=$(metric "$ah" telegate_fleet_devices_sent_total)
  t0=$(date +%s.%N)
  sleep "$seconds"
  a1=$(cpu "$a_pid") b1=$(cpu "$b_pid") n1=$(cpu "$nats_pid")
  s1=$(metric "$ah" telegate_fleet_sent_bytes_total) d1=$(metric "$ah" telegate_fleet_devices_sent_total)
  t1=$(date +%s.%N)
  kill "$dev_pid" "$a_pid" "$b_pid"
  wait "$dev_pid" "$a_pid" "$b_pid" 2>/dev/null || true
  # The same devices on A alone, without NATS.
  ad=$(port) ah=$(port)
  serve alone "$ad" "$ah"
  alone_pid=${pids[-1]}
  "$telegate" devices --connect "127.0.0.1:$ad" --count "$devices" --rate "$rate" --duration $((seconds + 60)) \
    --acks off --quiet > "$work/devices-alone.log" 2>&1 &
  dev_pid=$!
  pids+=("$dev_pid")
  wait_metric_ge "$ah" telegate_devices_connected "$devices"
  wait_metric_ge "$ah" telegate_devices_active "$devices"
  c0=$(cpu "$alone_pid") u0=$(date +%s.%N)
  sleep "$seconds"
  c1=$(cpu "$alone_pid") u1=$(date +%s.%N)
  kill "$dev_pid" "$alone_pid"
  wait "$dev_pid" "$alone_pid" 2>/dev/null || true
  awk -v D="$devices" -v R="$rate" -v t="$(echo "$t1 - $t0" | bc)" -v u="$(echo "$u1 - $u0" | bc)" \
    -v s="$((s1 - s0))" -v d="$((d1 - d0))" -v a="$(echo "$a1 - $a0" | bc)" -v b="$(echo "$b1 - $b0" | bc)" \
    -v n="$(echo "$n1 - $n0" | bc)" -v c="$(echo "$c1 - $c0" | bc)" \
    'BEGIN { printf "%-8d %-6s %12.0f %12.0f %14.1f %10.1f %10.1f %10.1f %12.1f\n", D, R, d / t, s / t, s / (d ? d : 1),
             100 * a / t, 100 * c / u, 100 * b / t, 100 * n / t }'
done
