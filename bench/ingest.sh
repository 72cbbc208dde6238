#!/usr/bin/env bash
# bench/ingest.sh - telegate serve's ingest rate, measured with the neutral
# load generator of ../shared/bench/ingest (tcpgen), as its README asks:
# the receiver's figure, from the first byte to the last reading
# aggregated (--storage none) or committed (--storage sqlite, postgres),
# with the receiver's CPU time and peak RSS (/usr/bin/time -v) and its idle
# RSS.
#
#   bench/ingest.sh                  # the full table: N = 10,000,000, K = 1, 7, 1000, none and sqlite
#   bench/ingest.sh --quick          # N = 1,000,000, K = 7 only (a smoke run)
#   bench/ingest.sh --runs 3         # median of 3 per case (default 1)
#   bench/ingest.sh --case none:7    # one case, storage:K
#   bench/ingest.sh --case "sqlite:7 postgres:7"
#
# postgres cases start a PostgreSQL server of their own in the temporary
# directory (initdb from /usr/lib/postgresql/N/bin or PATH, as `nobody`
# when run as root; fsync on, PostgreSQL's defaults otherwise), serve
# writes to it with --db-pool PG_POOL (default 1) connections, and each
# run also reports the server's CPU time (all its processes) and a bare
# COPY of the same rows into an empty table of the same columns, the
# ceiling serve is held against.
#
# Environment: BUILD (default build-release), PORT (a random one), WORKERS (2),
# SERVE_FLAGS (extra flags for serve), FORMAT (json | line), PG_POOL (1).
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
pg_pid=""
trap '[ -z "$pg_pid" ] || kill -INT "$pg_pid" 2>/dev/null; rm -rf "$work"' EXIT

# A PostgreSQL server for the postgres cases, started before them (runs
# are measured in subshells, which could not leave it to the next).
pg_port=$((port + 1))
pg_uri="postgresql://telegate@127.0.0.1:$pg_port/postgres"
pg_as=() # run as the server's user
pg_start() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -n "$bin" ] || bin=$(dirname "$(command -v initdb)")
  [ -x "$bin/initdb" ] || { echo "ingest.sh: postgres cases need PostgreSQL (scripts/deps.sh installs it)" >&2; exit 1; }
  mkdir "$work/pg"
  if [ "$(id -u)" -eq 0 ]; then
    chown nobody: "$work" "$work/pg"
    pg_as=(setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups)
  fi
  "${pg_as[@]}" "$bin/initdb" -D "$work/pg/data" -U telegate -A trust -E UTF8 --no-locale --no-instructions >"$work/pg/initdb.log"
  "${pg_as[@]}" "$bin/postgres" -D "$work/pg/data" -p "$pg_port" -k "$work/pg" -c listen_addresses=127.0.0.1 \
    >"$work/pg/postgres.log" 2>&1 &
  pg_pid=$!
  for _ in $(seq 600); do pg_isready -q -d "$pg_uri" && return; sleep 0.05; done
  echo "ingest.sh: postgres did not start" >&2; cat "$work/pg/postgres.log" >&2; exit 1
}
pg_sql() { PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 -d "$pg_uri" "$@"; }
# CPU seconds of the server so far: its live processes' own, plus what its
# ended sessions left in the postmaster's children's times.
pg_cpu() {
  local tick pids
  tick=$(getconf CLK_TCK)
  pids="$pg_pid $(pgrep -P "$pg_pid" | tr '\n' ' ')"
  for p in $pids; do cat "/proc/$p/stat" 2>/dev/null; done |
    awk -v root="$pg_pid" -v tick="$tick" '{sub(/^.*\) /, ""); t += $12 + $13; if (NR == 1) t += $14 + $15}
                                          END {printf "%.2f", t / tick}'
}
# A bare COPY of the rows serve stored, into an empty table of the same
# columns: rows/s.
pg_bare_copy() {
  pg_sql -c "\copy readings to '$work/pg/rows.copy' (format binary)"
  pg_sql -c "CREATE TABLE bare (LIKE readings)"
  local t0 t1
  t0=$(date +%s.%N)
  pg_sql -c "\copy bare from '$work/pg/rows.copy' (format binary)"
  t1=$(date +%s.%N)
  pg_sql -c "DROP TABLE bare"
  rm -f "$work/pg/rows.copy"
  awk -v n="$n" -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", n / (b - a)}'
}

# Devices per connection: tcpgen's README example (1000) for few
# connections; for 1,000 connections 10 each (10,000 devices in all).
devices_for() { [ "$1" -ge 1000 ] && echo 10 || echo 1000; }

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

run_case() { # storage K -> prints "rate cpu_per_M peak_kb idle_kb total_cpu db_cpu bare_copy_rate"
  local storage=$1 k=$2 d db=$work/bench.db pool=1 pg_before=0
  d=$(devices_for "$k")
  rm -f "$work"/bench.db*
  if [ "$storage" = postgres ]; then
    pg_sql -c "DROP TABLE IF EXISTS readings, device_hwm, mark_log"
    db=$pg_uri pool=${PG_POOL:-1}
    pg_before=$(pg_cpu)
  fi
  /usr/bin/time -v -o "$work/time.txt" "$telegate" serve --listen-devices "127.0.0.1:$port" \
    --storage "$storage" --db "$db" --db-pool "$pool" --workers "$workers" --quiet \
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
  local db_cpu=- bare=-
  if [ "$storage" = postgres ]; then
    db_cpu=$(awk -v a="$pg_before" -v b="$(pg_cpu)" 'BEGIN {printf "%.2f", b - a}')
    bare=$(pg_bare_copy)
  fi
  python3 - "$work/summary.json" "$work/time.txt" "$start" "$n" "$storage" "$idle" "$k" "$db_cpu" "$bare" <<'EOF'
import json, re, sys
summary, timef, start, n, storage, idle, k = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6]), int(sys.argv[7])
db_cpu, bare = sys.argv[8], sys.argv[9]
s = json.load(open(summary))
assert s["connections_accepted"] == k, f"{s['connections_accepted']} connections, not {k}: someone else connected"
t = open(timef).read()
user = float(re.search(r"User time \(seconds\): ([\d.]+)", t).group(1))
syst = float(re.search(r"System time \(seconds\): ([\d.]+)", t).group(1))
peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1))
end = s["last_commit_unix_ns"] if storage != "none" else s["last_aggregated_unix_ns"]
assert s["readings_received"] == n, f"received {s['readings_received']} of {n}"
assert s["lossless"], "serve reports a loss"
if storage != "none":
    assert s["db_rows"] == n, f"{s['db_rows']} rows of {n}"
rate = n / ((end - start) / 1e9)
print(f"{rate:.0f} {(user + syst) / (n / 1e6):.2f} {peak} {idle} {user + syst:.2f} {db_cpu} {bare}")
EOF
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

case " $cases " in *" postgres:"*) pg_start ;; esac
results=()
for c in $cases; do
  storage=${c%%:*}; k=${c##*:}
  rates=() cpus=() peaks=() idles=() dbcpus=() bares=()
  for r in $(seq "$runs"); do
    read -r rate cpu peak idle total db_cpu bare < <(run_case "$storage" "$k")
    echo "storage=$storage K=$k run=$r: $rate readings/s, $cpu CPU s per M ($total s), peak RSS $peak KiB, idle RSS $idle KiB" \
      "$([ "$db_cpu" = - ] || echo "; PostgreSQL: $db_cpu CPU s, a bare COPY of the same rows $bare rows/s")" >&2
    rates+=("$rate"); cpus+=("$cpu"); peaks+=("$peak"); idles+=("$idle"); dbcpus+=("$db_cpu"); bares+=("$bare")
  done
  peak=$(printf '%s\n' "${peaks[@]}" | median) idle=$(printf '%s\n' "${idles[@]}" | median)
  results+=("| $storage | $k | $(devices_for "$k") | $(printf '%s\n' "${rates[@]}" | median) | $(printf '%s\n' "${cpus[@]}" | median) | $(awk -v k="$peak" 'BEGIN {printf "%.1f", k / 1024}') MiB | $(awk -v k="$idle" 'BEGIN {printf "%.1f", k / 1024}') MiB | $(printf '%s\n' "${dbcpus[@]}" | median) | $(printf '%s\n' "${bares[@]}" | median) |")
done
echo
echo "N = $n readings, $workers workers, format $format, median of $runs"
echo
echo "| storage | K | devices/conn | readings/s | CPU s per M | peak RSS | idle RSS | PostgreSQL CPU s | bare COPY rows/s |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${results[@]}"
