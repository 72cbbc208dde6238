#!/usr/bin/env bash
# bench/postgres.sh - telegate serve's committed rate into PostgreSQL
# against a bare COPY of the same rows into the same server, in one run.
#
#   bench/postgres.sh                # N = 3,000,000 readings, 3 rounds
#   bench/postgres.sh --quick        # N = 1,000,000, 1 round
#   bench/postgres.sh --n N --rounds R --pool P
#
# One PostgreSQL server of its own in a temporary directory (initdb from
# /usr/lib/postgresql/N/bin or PATH, as `nobody` when run as root; fsync
# on, PostgreSQL's defaults otherwise) serves every case, so they share
# its settings. Each round runs, in an order that alternates between
# rounds (so neither side always runs on a warmer or a quieter machine):
#
#   telegate 1, telegate P
#               serve --storage postgres --db-pool 1, then P, fed by tcpgen (the
#               ingest benchmark's generator: 7 connections of 1,000
#               devices, JSON lines): from tcpgen's first byte to serve's
#               last commit (its summary), every reading checked stored
#   none        the same serve and load with --storage none, to the last
#               reading aggregated: what serve costs without a database
#   copy 1      bench/pgcopy.c: the rows serve stored (dumped once with
#               \copy ... (format binary)) into an empty table of the
#               readings table's shape and indexes (LIKE readings
#               INCLUDING ALL), one COPY on one connection
#   copy P      the same over P connections, the rows split by device
#   copy 1/1000 one connection, a transaction of 1,000 rows each (serve's
#               batch): what the transactions cost PostgreSQL
#   copy 1/1000/1
#               the same with serve's COPY, which inserts the rows one at
#               a time (a volatile WHERE; storage_postgres.c says why)
#
# Each case reports rows/s and the CPU seconds the server (all its
# processes) spent on it, and serve's own CPU seconds. The ratios quoted
# (telegate / copy) are taken within each round; the table ends with
# their medians.
# Environment: BUILD (default build-release), SERVE_FLAGS (extra flags for
# serve's postgres case), WORKERS (serve's, 2), BASE (another telegate
# binary, say a build of main: adds the case "base 1", it with --db-pool
# 1, for an A/B in the same rounds).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
shared=$(cd "$root/../shared/bench/ingest" && pwd)
build=${BUILD:-$root/build-release}
n=3000000
rounds=3
pool=2
workers=${WORKERS:-2}
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) n=1000000; rounds=1 ;;
    --n) n=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --pool) pool=$2; shift ;;
    *) echo "usage: bench/postgres.sh [--quick] [--n N] [--rounds R] [--pool P]" >&2; exit 2 ;;
  esac
  shift
done
[ -x /usr/bin/time ] || { echo "postgres.sh: needs /usr/bin/time (Debian package 'time')" >&2; exit 1; }
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target telegate pgcopy -j "$(nproc)" >/dev/null
cc -O2 -pthread -o "$build/tcpgen" "$shared/tcpgen.c"
telegate=$build/src/telegate pgcopy=$build/bench/pgcopy
work=$(mktemp -d)
. "$here/pg-server.sh"
trap 'pg_stop; rm -rf "$work"' EXIT
port=$((20000 + RANDOM % 30000))
chmod a+rx "$work" # the server, maybe as nobody, reaches its directory
pg_start "$work/pg" $((port + 1))
# The server's CPU seconds since roles $1 (pg_cpu_roles): "total:sessions/walwriter/checkpointer/other".
pg_cpu_since() {
  awk -v a="$1" -v b="$(pg_cpu_roles)" 'BEGIN {split(a, x, " "); split(b, y, " ")
    for (i = 1; i <= 4; i++) {d[i] = y[i] - x[i]; t += d[i]}
    printf "%.2f:%.2f/%.2f/%.2f/%.2f", t, d[1], d[2], d[3], d[4]}'
}

# serve with --storage $1 fed by tcpgen: prints "rate serve_cpu db_cpu".
serve_case() {
  local storage=$1 db=$work/none.db before
  shift
  if [ "$storage" = postgres ]; then
    db=$pg_uri
    pg_sql -c "DROP TABLE IF EXISTS readings, device_hwm, mark_log"
  fi
  before=$(pg_cpu_roles)
  /usr/bin/time -f "%U %S" -o "$work/time.txt" "${serve_bin:-$telegate}" serve --listen-devices "127.0.0.1:$port" \
    --listen-http 127.0.0.1:0 --storage "$storage" --db "$db" --workers "$workers" --quiet \
    --summary-json "$work/summary.json" --drain-ms 600000 "$@" >"$work/serve.log" 2>&1 &
  local tpid=$!
  for _ in $(seq 200); do ss -ltn "sport = :$port" | grep -q LISTEN && break; sleep 0.05; done
  "$build/tcpgen" -h 127.0.0.1 -p "$port" -k 7 -n "$n" -d 1000 >"$work/gen.txt"
  pkill -TERM -P "$tpid"
  wait "$tpid" || { echo "postgres.sh: serve failed" >&2; cat "$work/serve.log" >&2; exit 1; }
  local db_cpu
  db_cpu=$(pg_cpu_since "$before")
  python3 - "$work/summary.json" "$work/time.txt" "$(sed -n 's/^start_epoch_ns=//p' "$work/gen.txt")" "$n" \
    "$storage" "$db_cpu" <<'EOF'
import json, sys
s, (user, syst), start, n = json.load(open(sys.argv[1])), open(sys.argv[2]).read().split()[-2:], int(sys.argv[3]), int(sys.argv[4])
storage, db_cpu = sys.argv[5], sys.argv[6]
assert s["readings_received"] == n and s["lossless"], f"received {s['readings_received']} of {n}, or a loss"
if storage == "postgres":
    assert s["db_rows"] == n, f"{s['db_rows']} rows of {n}"
end = s["last_commit_unix_ns"] if storage == "postgres" else s["last_aggregated_unix_ns"]
print(f"{n / ((end - start) / 1e9):.0f} {float(user) + float(syst):.2f} {db_cpu if storage == 'postgres' else '-'}")
EOF
}

# pgcopy over $1 connections, $2 rows a transaction (0: one), WHERE $3: prints
# "rate - db_cpu".
copy_case() {
  pg_sql -c "DROP TABLE IF EXISTS bare" -c "CREATE TABLE bare (LIKE readings INCLUDING ALL)"
  local before out
  before=$(pg_cpu_roles)
  out=$("$pgcopy" "$pg_uri" bare "$work/rows.copy" "$@")
  echo "$(echo "$out" | awk '{print $3}') - $(pg_cpu_since "$before")"
  pg_sql -c "DROP TABLE bare"
}

cases=("telegate 1" "telegate $pool" "none" "copy 1" "copy $pool" "copy 1/1000" "copy 1/1000/1")
[ -z "${BASE:-}" ] || cases=("base 1" "${cases[@]}")
run() {
  case "$1" in
    "telegate 1") serve_case postgres --db-pool 1 ${SERVE_FLAGS:-} ;;
    "base 1") serve_bin=$BASE serve_case postgres --db-pool 1 ${SERVE_FLAGS:-} ;;
    "telegate $pool") serve_case postgres --db-pool "$pool" ${SERVE_FLAGS:-} ;;
    none) serve_case none ;;
    "copy 1") copy_case 1 0 ;;
    "copy $pool") copy_case "$pool" 0 ;;
    "copy 1/1000") copy_case 1 1000 ;;
    "copy 1/1000/1") copy_case 1 1000 "WHERE random() >= 0" ;;
  esac
}
declare -A rate cpu dbcpu
for r in $(seq "$rounds"); do
  order=("${cases[@]}")
  if [ $((r % 2)) -eq 0 ]; then order=(); for c in "${cases[@]}"; do order=("$c" "${order[@]}"); done; fi
  if [ ! -f "$work/rows.copy" ]; then # the rows, from a first serve run
    serve_case postgres --db-pool "$pool" ${SERVE_FLAGS:-} >/dev/null
    pg_sql -c "\copy readings to '$work/rows.copy' (format binary)"
    chmod a+r "$work/rows.copy"
  fi
  for c in "${order[@]}"; do
    out=$(run "$c")
    read -r rt cp db <<<"$out"
    rate[$r,$c]=$rt cpu[$r,$c]=$cp dbcpu[$r,$c]=$db
    echo "round $r, $c: $rt rows/s, serve CPU $cp s, PostgreSQL CPU $db s" >&2
  done
done

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
echo
echo "N = $n readings (7 connections x 1,000 devices, JSON), serve --workers $workers${SERVE_FLAGS:+ $SERVE_FLAGS}," \
  "PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}'), $rounds rounds; $(nproc) cores"
echo
echo "| case | rows/s by round | serve CPU s | PostgreSQL CPU s: all (sessions / walwriter / checkpointer / other) |"
echo "|---|---:|---:|---:|"
for c in "${cases[@]}"; do
  rs="" cs="" ds=""
  for r in $(seq "$rounds"); do
    rs+="${rs:+ / }${rate[$r,$c]}" cs+="${cs:+ / }${cpu[$r,$c]}" ds+="${ds:+; }${dbcpu[$r,$c]/:/ (}"
    [ "${dbcpu[$r,$c]}" = - ] || ds+=")"
  done
  echo "| $c | $rs | $cs | $ds |"
done
echo
for t in ${BASE:+"base 1"} "telegate 1" "telegate $pool"; do
  for c in "copy 1" "copy $pool" "copy 1/1000/1"; do
    rs=""
    for r in $(seq "$rounds"); do rs+="$(ratio "${rate[$r,$t]}" "${rate[$r,$c]}") "; done
    echo "$t / $c: $rs(median $(printf '%s\n' $rs | median))"
  done
done
