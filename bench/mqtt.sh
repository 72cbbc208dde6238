#!/usr/bin/env bash
# bench/mqtt.sh - MQTT ingest against the broker's own rate, in one run:
# N messages published once to a local mosquitto and queued for two
# persistent sessions, then drained by mosquitto_sub -q 1 (the broker's
# rate to a subscriber that does nothing but acknowledge) and by telegate
# serve (PUBACK after commit), each timed from its connect to its last
# message (mosquitto_sub) or reading committed (telegate, polled from
# /metrics every 10 ms). "broker CPU" is the broker's CPU time over the
# drain's wall time: near 100 %, the broker (one thread) is the bound.
#
#   bench/mqtt.sh                     # N = 200,000, 100 devices, storage sqlite
#   bench/mqtt.sh --quick             # N = 50,000
#   bench/mqtt.sh --n N --devices D --storage none --inflight W
#   bench/mqtt.sh --version 3.1.1 --broker-window 20   # MQTT 3.1.1 against mosquitto's default window
#
# The broker keeps no cap on its queues; its window for 3.1.1 clients
# (max_inflight_messages) is 0, none, unless --broker-window says
# otherwise. telegate's window is --mqtt-inflight (2000 by default), which
# MQTT 5 (--version, default auto) tells the broker. The messages are
# JSON readings without a device (the topic's level is it).
# Environment: BUILD (default build-release).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
build=${BUILD:-$root/build-release}
n=200000
devices=100
storage=sqlite
inflight=2000
version=auto
window=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) n=50000 ;;
    --n) n=$2; shift ;;
    --devices) devices=$2; shift ;;
    --storage) storage=$2; shift ;;
    --inflight) inflight=$2; shift ;;
    --version) version=$2; shift ;;
    --broker-window) window=$2; shift ;;
    *) echo "usage: bench/mqtt.sh [--quick] [--n N] [--devices D] [--storage sqlite|none] [--inflight W]" \
         "[--version auto|5|3.1.1] [--broker-window W]" >&2; exit 2 ;;
  esac
  shift
done
for tool in mosquitto mosquitto_pub mosquitto_sub; do
  command -v "$tool" >/dev/null || { echo "mqtt.sh: needs $tool (Debian packages mosquitto mosquitto-clients)" >&2; exit 1; }
done
. "$here/lib.sh"
bench_build
bench_workdir

port=$((20000 + RANDOM % 30000))
cat >"$work/mosquitto.conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
persistence false
max_inflight_messages $window
max_queued_messages 0
$([ "$(id -u)" = 0 ] && echo "user root")
EOF
mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
broker=$!
pids+=($broker)
bench_wait_port "$port"

now_ms() { date +%s%3N; }
# The broker's CPU time so far (user + system), in ms: how busy each drain kept it.
tick=$(getconf CLK_TCK)
broker_cpu_ms() { awk -v t="$tick" '{ print int(($14 + $15) * 1000 / t) }' "/proc/$broker/stat"; }
topic='telemetry/+/readings'
# Both sessions exist before the messages are published, so the broker
# queues every message for each.
mosquitto_sub -p "$port" -q 1 -c -i bench-sub -t "$topic" -C 1 -W 1 >/dev/null 2>&1 || true
mosquitto_sub -p "$port" -q 1 -c -i bench-telegate -t "$topic" -C 1 -W 1 >/dev/null 2>&1 || true

per=$((n / devices))
n=$((per * devices))
echo "mqtt.sh: publishing $n messages ($devices devices x $per) at QoS 1 to mosquitto on $port"
t0=$(now_ms)
publishers=()
for d in $(seq "$devices"); do
  awk -v per="$per" 'BEGIN { for (s = 1; s <= per; s++)
    printf "{\"seq\":%d,\"ts\":%.0f,\"temperature\":21.5,\"humidity\":48.2,\"battery\":87}\n", s, 1732590000000 + s }' \
    | mosquitto_pub -p "$port" -q 1 -t "telemetry/d$d/readings" -l &
  publishers+=($!)
  if [ ${#publishers[@]} = 8 ]; then
    wait "${publishers[@]}"
    publishers=()
  fi
done
[ ${#publishers[@]} = 0 ] || wait "${publishers[@]}"
echo "mqtt.sh: published in $(($(now_ms) - t0)) ms"

# mosquitto_sub: the broker's rate to a subscriber that only acknowledges.
t0=$(now_ms) c0=$(broker_cpu_ms)
mosquitto_sub -p "$port" -q 1 -c -i bench-sub -t "$topic" -C "$n" >/dev/null
sub_ms=$(($(now_ms) - t0)) sub_cpu=$(($(broker_cpu_ms) - c0))

# telegate: from its start to the last reading committed.
t0=$(now_ms) c0=$(broker_cpu_ms)
"$telegate" serve --listen-devices 127.0.0.1:0 --listen-http 127.0.0.1:0 --db "$work/bench.db" --storage "$storage" \
  --mqtt "mqtt://127.0.0.1:$port" --mqtt-client-id bench-telegate --mqtt-inflight "$inflight" --mqtt-version "$version" \
  --health-interval-ms 0 >"$work/serve.log" 2>&1 &
serve=$!
pids+=($serve)
http=
for _ in $(seq 1000); do
  http=$(grep -o '/metrics on http://127.0.0.1:[0-9]*' "$work/serve.log" | grep -o '[0-9]*$' || true)
  [ -n "$http" ] && break
  sleep 0.01
done
stored=0 acked=0
for _ in $(seq 60000); do
  read -r stored acked < <(curl -s "http://127.0.0.1:$http/metrics" |
    awk '$1 == "telegate_readings_stored_total" { s = $2 } $1 == "telegate_mqtt_acks_total" { a = $2 }
         END { print s + 0, a + 0 }')
  [ "$stored" -ge "$n" ] || [ "$acked" -ge "$n" ] && break
  sleep 0.01
done
tg_ms=$(($(now_ms) - t0)) tg_cpu=$(($(broker_cpu_ms) - c0))
kill -TERM "$serve"
wait "$serve" || true
[ "$stored" -ge "$n" ] || { echo "mqtt.sh: telegate stored $stored of $n ($acked acknowledged)" >&2; tail "$work/serve.log" >&2; exit 1; }

rate() { awk -v n="$1" -v ms="$2" 'BEGIN { printf "%.0f", n / (ms / 1000) }'; }
sub_rate=$(rate "$n" "$sub_ms")
tg_rate=$(rate "$n" "$tg_ms")
busy() { awk -v c="$1" -v ms="$2" 'BEGIN { printf "%.0f%%", 100 * c / ms }'; }
printf '%-34s %10s %10s %12s\n' "" "ms" "msg/s" "broker CPU"
printf '%-34s %10d %10s %12s\n' "mosquitto_sub -q 1 (the broker)" "$sub_ms" "$sub_rate" "$(busy "$sub_cpu" "$sub_ms")"
printf '%-34s %10d %10s %12s\n' "telegate serve ($storage, MQTT $version)" "$tg_ms" "$tg_rate" "$(busy "$tg_cpu" "$tg_ms")"
awk -v a="$tg_rate" -v b="$sub_rate" 'BEGIN { printf "telegate / mosquitto_sub: %.2f\n", a / b }'
