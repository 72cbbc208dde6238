# bench/pg-server.sh - sourced by the benchmarks that need a PostgreSQL
# server of their own: pg_start DIR PORT starts one in DIR (initdb from
# /usr/lib/postgresql/N/bin or PATH, as `nobody` when run as root; fsync
# on, PostgreSQL's defaults otherwise) and sets pg_uri, pg_pid and
# pg_bin; pg_sql runs psql on it; pg_cpu prints the CPU seconds its
# processes spent so far; pg_stop ends it (the caller's EXIT trap calls
# it).
pg_pid=""
pg_start() {
  local dir=$1 port=$2 as=()
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -n "$pg_bin" ] || pg_bin=$(dirname "$(command -v initdb)")
  [ -x "$pg_bin/initdb" ] || { echo "needs PostgreSQL (scripts/deps.sh installs it)" >&2; exit 1; }
  mkdir -p "$dir"
  if [ "$(id -u)" -eq 0 ]; then
    chown nobody: "$dir"
    as=(setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups)
  fi
  "${as[@]}" "$pg_bin/initdb" -D "$dir/data" -U telegate -A trust -E UTF8 --no-locale --no-instructions >"$dir/initdb.log"
  "${as[@]}" "$pg_bin/postgres" -D "$dir/data" -p "$port" -k "$dir" -c listen_addresses=127.0.0.1 >"$dir/postgres.log" 2>&1 &
  pg_pid=$!
  pg_uri="postgresql://telegate@127.0.0.1:$port/postgres"
  for _ in $(seq 600); do pg_isready -q -d "$pg_uri" && return; sleep 0.05; done
  echo "postgres did not start" >&2
  cat "$dir/postgres.log" >&2
  exit 1
}
pg_stop() {
  [ -z "$pg_pid" ] || { kill -INT "$pg_pid" 2>/dev/null; wait "$pg_pid" 2>/dev/null || true; }
  pg_pid=""
}
pg_sql() { PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 -d "$pg_uri" "$@"; }
# Its live processes' own time, plus what its ended ones (sessions,
# autovacuum workers) left in the postmaster's children's times.
pg_cpu() {
  local p
  for p in $pg_pid $(pgrep -P "$pg_pid"); do cat "/proc/$p/stat" 2>/dev/null || true; done |
    awk -v root="$pg_pid" -v tick="$(getconf CLK_TCK)" '{pid = $1; sub(/^.*\) /, ""); t += $12 + $13
                                                        if (pid == root) t += $14 + $15} END {printf "%.2f", t / tick}'
}
# The same by role, "sessions walwriter checkpointer other": sessions
# are the live and ended ones (with autovacuum's workers, which end too).
pg_cpu_roles() {
  local p
  for p in $pg_pid $(pgrep -P "$pg_pid"); do
    [ -r "/proc/$p/stat" ] || continue
    echo "$(tr '\0 ' '__' <"/proc/$p/cmdline" 2>/dev/null) $(cat "/proc/$p/stat" 2>/dev/null)"
  done | awk -v root="$pg_pid" -v tick="$(getconf CLK_TCK)" '
    {name = $1; pid = $2; sub(/^[^ ]* [^ ]* \(.*\) /, ""); t = $12 + $13
     if (pid == root) {s += $14 + $15; o += t} else if (name ~ /walwriter/) w += t
     else if (name ~ /checkpointer/) c += t; else if (name ~ /^postgres:_(background|autovacuum_launcher|logical)/) o += t
     else s += t}
    END {printf "%.2f %.2f %.2f %.2f", s / tick, w / tick, c / tick, o / tick}'
}
# CPU seconds of one process so far (0 once it is gone).
proc_cpu() {
  awk -v tick="$(getconf CLK_TCK)" '{sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / tick}' "/proc/$1/stat" 2>/dev/null ||
    echo 0
}
