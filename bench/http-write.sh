#!/usr/bin/env bash
# bench/http-write.sh - the InfluxDB write API's rate: points committed per
# second through POST /api/v2/write, with bodies of 5,000 lines (Telegraf's
# default batch is 1,000; agents that batch harder send about this), C
# clients posting at once over keep-alive connections, against the device
# port's rate for the same points in the same run (tcpgen-shaped lines,
# bench/ackgen.c, 7 connections).
#
#   bench/http-write.sh                 # N = 2,000,000 points, C = 4, SQLite, 3 runs each
#   bench/http-write.sh --quick         # N = 500,000, one run each
#   bench/http-write.sh --n N --c C --runs R --gzip
#
# The rate is the client's: from the first request to the last 204, each
# of which comes once its points are committed, so it is a committed rate
# like bench/ingest.sh's. Every body has 5 devices x 1,000 points with seq.
# Environment: BUILD (default build-release), WORKERS (2).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
build=${BUILD:-$root/build-release}
workers=${WORKERS:-2}
n=2000000 c=4 runs=3 gz=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) n=500000; runs=1 ;;
    --n) n=$2; shift ;;
    --c) c=$2; shift ;;
    --runs) runs=$2; shift ;;
    --gzip) gz=1 ;;
    *) echo "usage: bench/http-write.sh [--quick] [--n N] [--c C] [--runs R] [--gzip]" >&2; exit 2 ;;
  esac
  shift
done

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target telegate -j "$(nproc)" >/dev/null
cc -O2 -pthread -o "$build/ackgen" "$here/ackgen.c" -lssl -lcrypto
telegate=$build/src/telegate
work=$(mktemp -d)
trap 'pkill -P $$ 2>/dev/null || true; rm -rf "$work"' EXIT

# serve on free ports; prints "DEVICE_PORT HTTP_PORT" once it listens
start_serve() {
  rm -f "$work"/t.db*
  "$telegate" serve --listen-devices 127.0.0.1:0 --listen-http 127.0.0.1:0 --db "$work/t.db" --workers "$workers" \
    >"$work/serve.log" 2>&1 &
  serve_pid=$!
  for _ in $(seq 500); do
    dp=$(grep -o 'devices on 127.0.0.1:[0-9]*' "$work/serve.log" | grep -o '[0-9]*$' || true)
    hp=$(grep -o '/metrics on http://127.0.0.1:[0-9]*' "$work/serve.log" | grep -o '[0-9]*$' || true)
    [ -n "$dp" ] && [ -n "$hp" ] && return 0
    sleep 0.02
  done
  echo "serve did not start" >&2; cat "$work/serve.log" >&2; exit 1
}

stored() { curl -s "http://127.0.0.1:$hp/metrics" | awk '/^telegate_readings_stored_total /{print $2}'; }

http_run() {
  /usr/bin/python3 - "$hp" "$n" "$c" "$gz" <<'EOF'
import gzip, http.client, sys, threading, time
port, n, c, gz = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
LINES, DEVICES = 5000, 5
bodies = n // LINES
def body(k):  # body k: devices c{k%c}-0..4, seqs continuing per client
    client, round_ = k % c, k // c
    out = []
    for d in range(DEVICES):
        for j in range(LINES // DEVICES):
            seq = round_ * (LINES // DEVICES) + j + 1
            out.append("telemetry,device=w%d-%d temperature=21.%d,humidity=48.%d,battery=%di,seq=%di %d"
                       % (client, d, j % 10, (j * 7) % 10, 50 + j % 50, seq, (1732590000000 + seq) * 1000000))
    b = "\n".join(out).encode()
    return gzip.compress(b, 1) if gz else b
prepared = [body(k) for k in range(bodies)]
errors = []
def worker(i):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Content-Encoding": "gzip"} if gz else {}
    for k in range(i, bodies, c):
        conn.request("POST", "/api/v2/write?org=o&bucket=b", prepared[k], headers)
        r = conn.getresponse()
        r.read()
        if r.status != 204:
            errors.append(r.status)
t0 = time.monotonic()
threads = [threading.Thread(target=worker, args=(i,)) for i in range(c)]
for t in threads: t.start()
for t in threads: t.join()
dt = time.monotonic() - t0
if errors: sys.exit("errors: %s" % errors[:5])
print("%.0f" % (bodies * LINES / dt))
EOF
}

tcp_run() {
  local t0 t1 before
  before=$(stored)
  t0=$(date +%s.%N)
  "$build/ackgen" -p "$dp" -n "$n" -k 7 >/dev/null
  while [ "$(stored)" -lt $((before + n)) ]; do sleep 0.01; done
  t1=$(date +%s.%N)
  awk -v n="$n" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f\n", n / (b - a) }'
}

echo "N=$n points, bodies of 5000 lines, C=$c clients, gzip=$gz, workers=$workers; $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"
http_rates=() tcp_rates=()
for r in $(seq "$runs"); do
  start_serve
  http_rates+=("$(http_run)")
  kill -TERM "$serve_pid"; wait "$serve_pid" || true
  start_serve
  tcp_rates+=("$(tcp_run)")
  kill -TERM "$serve_pid"; wait "$serve_pid" || true
  echo "run $r: http ${http_rates[-1]} points/s, device port ${tcp_rates[-1]} readings/s"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
h=$(median "${http_rates[@]}") t=$(median "${tcp_rates[@]}")
awk -v h="$h" -v t="$t" 'BEGIN { printf "median: http %.0f points/s, device port %.0f readings/s, ratio %.2f\n", h, t, h / t }'
