#!/usr/bin/env bash
# bench/retention.sh - ingest while --retention deletes, against ingest
# alone, in one run: a database holds OLD readings a year old (of other
# devices than the generator's), indexed; serve takes N readings from
# tcpgen (bench/ingest.sh's generator, K connections) with --retention 30d
# deleting the old ones meanwhile, and again on a fresh copy without
# --retention, the cases taking turns RUNS times. Prints the committed
# rate of each run (first byte to last commit, serve's own timestamps)
# and the rows retention deleted during it.
#
#   bench/retention.sh                 # OLD=5000000 N=5000000 K=7 RUNS=2
#
# Environment: BUILD (default build-release), OLD, N, K, RUNS, PORT.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
shared=$(cd "$root/../shared/bench/ingest" && pwd)
build=${BUILD:-$root/build-release}
old=${OLD:-5000000} n=${N:-5000000} k=${K:-7} runs=${RUNS:-2}
port=${PORT:-$((20000 + RANDOM % 30000))}
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target telegate -j "$(nproc)" >/dev/null
cc -O2 -pthread -o "$build/tcpgen" "$shared/tcpgen.c"
telegate=$build/src/telegate
work=$(mktemp -d)
spid=
trap '[ -n "$spid" ] && kill "$spid" 2>/dev/null; rm -rf "$work"' EXIT

# The old readings: 7,000 devices "old-0".., a year before now, with
# their marks (retention walks the devices of device_hwm).
year_ago=$(( $(date +%s) * 1000 - 365 * 86400000 ))
sqlite3 "$work/old.db" >/dev/null <<SQL
PRAGMA journal_mode=WAL;
CREATE TABLE readings (device TEXT NOT NULL, seq INTEGER NOT NULL, ts_ms INTEGER NOT NULL, temperature REAL NOT NULL,
  humidity REAL NOT NULL, battery INTEGER NOT NULL, batch INTEGER NOT NULL);
CREATE TABLE device_hwm (device TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < $old - 1)
INSERT INTO readings SELECT 'old-' || (i % 7000), i / 7000 + 1, $year_ago + i, 21.5, 48.2, 87, i / 1000 FROM c;
INSERT INTO device_hwm SELECT device, MAX(seq) FROM readings GROUP BY device;
SQL

metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v k="$2" '$1 == k {print $2}' || true; }

# serve once on it, until its history index holds every old reading.
"$telegate" serve --listen-devices 127.0.0.1:0 --listen-http "127.0.0.1:$port" --db "$work/old.db" \
  --health-interval-ms 0 --quiet >/dev/null 2>&1 &
spid=$!
for _ in $(seq 600); do
  [ "$(metric "$port" telegate_history_index_behind)" = 0 ] && break
  sleep 1
done
kill -TERM "$spid"; wait "$spid"; spid=

run() { # label flags... -> "rate deleted"
  local label=$1; shift
  rm -f "$work"/bench.db*
  cp "$work/old.db" "$work/bench.db"; cp "$work/old.db-history" "$work/bench.db-history"
  "$telegate" serve --listen-devices "127.0.0.1:$((port + 1))" --listen-http "127.0.0.1:$port" --db "$work/bench.db" \
    --quiet --summary-json "$work/summary.json" --drain-ms 600000 --workers 2 "$@" >"$work/serve.log" 2>&1 &
  spid=$!
  for _ in $(seq 100); do ss -ltn "sport = :$((port + 1))" | grep -q LISTEN && break; sleep 0.05; done
  "$build/tcpgen" -h 127.0.0.1 -p "$((port + 1))" -k "$k" -n "$n" -d 1000 >"$work/gen.txt"
  kill -TERM "$spid"; wait "$spid" || { cat "$work/serve.log" >&2; exit 1; }
  spid=
  python3 - "$work/summary.json" "$(sed -n 's/^start_epoch_ns=//p' "$work/gen.txt")" "$n" "$label" <<'PY'
import json, sys
s, start, n, label = json.load(open(sys.argv[1])), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
assert s["readings_stored"] == n and s["lossless"], "not every reading was stored"
rate = n / ((s["last_commit_unix_ns"] - start) / 1e9)
print(f"| {label} | {rate:,.0f} | {s['retention_deleted']:,} |")
PY
}

echo "OLD = $old old readings (indexed), N = $n new ones over K = $k connections, 7,000 devices"
echo
echo "| case | readings/s committed | old readings deleted meanwhile |"
echo "|---|---:|---:|"
for _ in $(seq "$runs"); do
  run "ingest alone"
  run "ingest + --retention 30d" --retention 30d
done
