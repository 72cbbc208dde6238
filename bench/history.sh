#!/usr/bin/env bash
# bench/history.sh - the history endpoint on a big table: generates ROWS
# readings of DEVICES interleaved devices (one a millisecond, as a fleet
# would send them) straight into a SQLite database with the sqlite3
# shell, starts serve on it, waits until its history index has caught up
# (/metrics: telegate_history_index_behind; the time it takes is the
# index's rebuild rate), then times queries
# with curl: the first page of a device, a page in the middle of its
# range, a one-hour range, and one-minute buckets over a day.
#
#   bench/history.sh                    # ROWS=20000000 DEVICES=5000
#   ROWS=100000000 bench/history.sh
#
# Environment: BUILD (default build-release), ROWS, DEVICES, PORT.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
build=${BUILD:-$root/build-release}
rows=${ROWS:-20000000}
devices=${DEVICES:-5000}
port=${PORT:-$((20000 + RANDOM % 30000))}
command -v sqlite3 >/dev/null || { echo "history.sh: needs the sqlite3 shell (Debian package sqlite3)" >&2; exit 1; }
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target telegate -j "$(nproc)" >/dev/null
work=$(mktemp -d)
spid=
trap '[ -n "$spid" ] && kill "$spid" 2>/dev/null; rm -rf "$work"' EXIT
db=$work/big.db
t0=1700000000000

start=$(date +%s.%N)
sqlite3 "$db" <<EOF
PRAGMA journal_mode=WAL;
CREATE TABLE readings (device TEXT NOT NULL, seq INTEGER NOT NULL, ts_ms INTEGER NOT NULL, temperature REAL NOT NULL,
  humidity REAL NOT NULL, battery INTEGER NOT NULL, batch INTEGER NOT NULL);
CREATE TABLE device_hwm (device TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < $rows - 1)
INSERT INTO readings SELECT CAST(i % $devices AS TEXT), i / $devices + 1, $t0 + i, 20 + (i % 97) / 10.0,
  40 + (i % 89) / 10.0, 100 - (i / $devices) % 100, i / 1000 FROM c;
INSERT INTO device_hwm SELECT CAST(d AS TEXT), $rows / $devices FROM (WITH RECURSIVE c(d) AS
  (SELECT 0 UNION ALL SELECT d + 1 FROM c WHERE d < $devices - 1) SELECT d FROM c);
EOF
echo "generated $rows rows of $devices devices in $(echo "$(date +%s.%N) - $start" | bc) s; $(du -h "$db" | cut -f1)"

"$build/src/telegate" serve --listen-devices "127.0.0.1:0" --listen-http "127.0.0.1:$port" --db "$db" \
  --health-interval-ms 0 --quiet >"$work/serve.log" 2>&1 &
spid=$!
start=$(date +%s.%N)
url="http://127.0.0.1:$port/api/devices/42/readings"
# The index has caught up when /metrics says no row waits for it.
for _ in $(seq 6000); do
  behind=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^telegate_history_index_behind / {print $2}' || true)
  [ "$behind" = 0 ] && break
  sleep 1
done
echo "serve indexed $rows rows in $(echo "$(date +%s.%N) - $start" | bc) s (index file $(du -h "$db-history" | cut -f1))"

q() { # label query
  local best=999
  for _ in 1 2 3 4 5; do
    t=$(curl -s -o "$work/out" -w '%{time_total}' "$url?$2")
    best=$(echo "if ($t < $best) $t else $best" | bc)
  done
  echo "| $1 | \`?$2\` | $(echo "$best * 1000" | bc) ms | $(wc -c <"$work/out") bytes |"
}
mid=$((t0 + rows / 2))
echo
echo "| query | parameters | best of 5 | response |"
echo "|---|---|---:|---:|"
q "first page (1000 readings)" ""
q "a page in the middle" "from=$mid&limit=1000"
q "one hour (all of it, 10000 max)" "from=$mid&to=$((mid + 3600000))&limit=10000"
q "CSV, 10000 readings" "from=$mid&limit=10000&format=csv"
q "1-minute buckets over a day" "from=$mid&to=$((mid + 86400000))&every=1m&limit=1440"
q "1-hour buckets over all of it" "every=1h&limit=10000"
kill -TERM "$spid"
wait "$spid" || true
spid=
