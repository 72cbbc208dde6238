#!/usr/bin/env bash
# test-install.sh - what `cmake --install` gives an operator, checked on a
# real install into a temporary DESTDIR (prefix /usr) and with the tools
# an operator would use on it.
#
#   test-install.sh CASE BUILD_DIR SOURCE_DIR CC [CFLAGS]
#
#   pkgconfig  examples/hello.c builds against the installed libtg with only
#              `pkg-config --cflags --libs tg` (shared: runs, libtg.so.0
#              named) and with `--static` (runs, no libtg.so needed)
#   systemd    systemd-analyze verify accepts the installed unit, with
#              ExecStart pointed at the installed binary and configuration
#              and the installed man page found for Documentation=; its
#              security score stays hardened; its command line with
#              --check accepts the installed configuration, whose database
#              is in the unit's StateDirectory; a second install keeps an
#              edited configuration. Skipped without systemd-analyze
#   man        every page renders without a groff or man warning; each
#              command's section lists every flag its --help lists; the
#              libtg(3) example is examples/hello.c
#   metrics    the installed telegate prints its version, and the /metrics
#              of a running `telegate serve` passes `promtool check metrics`
#
# CC and CFLAGS are this build's compiler and flags (a sanitizer build's
# libtg needs its runtime in the program too). Exit 0: passed, 77: skipped.
set -euo pipefail

case_name=$1 build=$2 src=$3 cc=$4 cflags=${5:-}
tmp=$(mktemp -d)
serve_pid=
cleanup() {
  [ -n "$serve_pid" ] && kill -KILL "$serve_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  exit 1
}

dest=$tmp/dest
DESTDIR=$dest cmake --install "$build" --prefix /usr >"$tmp/install.log" || {
  cat "$tmp/install.log" >&2
  fail "cmake --install"
}
bin=$dest/usr/bin/telegate
[ -x "$bin" ] || fail "no $bin after the install"

# The pc file and libraries, wherever GNUInstallDirs put them under /usr.
pc=$(find "$dest/usr" -name tg.pc)
[ -n "$pc" ] || fail "no tg.pc installed"
libdir=$(dirname "$(dirname "$pc")")

check_pkgconfig() {
  export PKG_CONFIG_PATH=$(dirname "$pc") PKG_CONFIG_SYSROOT_DIR=$dest
  local version
  version=$(pkg-config --modversion tg)
  "$bin" --version | grep -q "^telegate $version (libtg $version, " || fail "pkg-config says $version, $("$bin" --version)"
  local want="hello from libtg $version: got 1 got 2 got 3"

  # shellcheck disable=SC2046,SC2086 # pkg-config's and CFLAGS' words are meant to split
  $cc $cflags "$src/examples/hello.c" $(pkg-config --cflags --libs tg) -o "$tmp/hello-shared"
  readelf -d "$tmp/hello-shared" | grep -q "NEEDED.*\[libtg\.so\.${version%%.*}\]" ||
    fail "hello does not name libtg.so.${version%%.*}: $(readelf -d "$tmp/hello-shared" | grep NEEDED)"
  [ "$(readlink "$libdir/libtg.so.${version%%.*}")" = "libtg.so.$version" ] ||
    fail "libtg.so.${version%%.*} -> $(readlink "$libdir/libtg.so.${version%%.*}"), not libtg.so.$version"
  local out
  out=$(LD_LIBRARY_PATH=$libdir "$tmp/hello-shared")
  [ "$out" = "$want" ] || fail "shared hello printed '$out', not '$want'"

  # The static archive: -Bstatic for libtg alone, the rest as --static
  # says, without its -ltg (which would pick libtg.so again, and a linker
  # without --as-needed would keep it).
  local static_libs=" $(pkg-config --static --libs tg) "
  # shellcheck disable=SC2046,SC2086
  $cc $cflags "$src/examples/hello.c" $(pkg-config --cflags tg) -Wl,-Bstatic -ltg -Wl,-Bdynamic \
    ${static_libs// -ltg / } -o "$tmp/hello-static"
  if readelf -d "$tmp/hello-static" | grep -q "libtg\.so"; then fail "the static hello still needs libtg.so"; fi
  out=$("$tmp/hello-static")
  [ "$out" = "$want" ] || fail "static hello printed '$out', not '$want'"
  echo "pkgconfig: hello built and ran against the installed libtg $version, shared and static"
}

check_systemd() {
  if ! command -v systemd-analyze >/dev/null; then
    echo "SKIP: no systemd-analyze (apt-get install systemd)"
    exit 77
  fi
  local unit
  unit=$(find "$dest/usr" -name telegate.service)
  [ -n "$unit" ] || fail "no telegate.service installed"
  local config=$dest/etc/telegate/telegate.ini
  grep -q "^ExecStart=/usr/bin/telegate serve --config /etc/telegate/telegate.ini " "$unit" ||
    fail "ExecStart does not run /usr/bin/telegate on /etc/telegate/telegate.ini: $(grep ExecStart "$unit")"
  [ -f "$config" ] || fail "no /etc/telegate/telegate.ini installed"
  # verify wants ExecStart's binary to exist, and runs man for Documentation=.
  sed "/^ExecStart=/ s#/usr/bin/telegate#$bin#; /^ExecStart=/ s#/etc/telegate/#$dest/etc/telegate/#" "$unit" \
    >"$tmp/telegate.service"
  if ! MANPATH=$dest/usr/share/man systemd-analyze verify "$tmp/telegate.service" >"$tmp/verify.log" 2>&1 ||
    [ -s "$tmp/verify.log" ]; then
    cat "$tmp/verify.log" >&2
    fail "systemd-analyze verify"
  fi
  # The hardening stays: systemd's exposure score (0 best, 10 worst) at
  # most 2.0, where it is 1.1 with every line of the unit.
  systemd-analyze security --offline=yes --threshold=20 "$tmp/telegate.service" >"$tmp/security.log" 2>&1 || {
    cat "$tmp/security.log" >&2
    fail "systemd-analyze security: exposure above 2.0"
  }
  # ExecStart's command line, with --check: the installed configuration
  # is valid, and its database is in the service's StateDirectory, the
  # one place the unit lets it write.
  local exec state
  exec=$(sed -n 's/^ExecStart=//p' "$tmp/telegate.service")
  exec=${exec/ \$TELEGATE_FLAGS/}
  state=/var/lib/$(sed -n 's/^StateDirectory=//p' "$unit")/
  # shellcheck disable=SC2086 # the command line's words
  $exec --check >"$tmp/check.log" 2>&1 || {
    cat "$tmp/check.log" >&2
    fail "$exec --check"
  }
  grep -q "^db = $state" "$tmp/check.log" || fail "the database is not under $state: $(grep '^db' "$tmp/check.log")"
  # The configuration is the administrator's: installing again keeps it.
  echo "; edited here" >>"$config"
  DESTDIR=$dest cmake --install "$build" --prefix /usr >"$tmp/install.log"
  grep -q "^; edited here" "$config" || fail "a second install replaced the edited $config"
  echo "systemd: systemd-analyze verify accepts telegate.service;" \
    "$(grep -o 'exposure level.*' "$tmp/security.log")"
}

# The roff of a page's section NAME (from .SH NAME to the next .SH).
section() { awk -v s=".SH $2" '$0 == s {on = 1; next} /^\.SH / {on = 0} on' "$1"; }

check_man() {
  local page1=$dest/usr/share/man/man1/telegate.1 page3=$dest/usr/share/man/man3/libtg.3
  for page in "$page1" "$page3"; do
    [ -f "$page" ] || fail "no $page installed"
    groff -ww -z -man "$page" 2>"$tmp/groff.log" && [ ! -s "$tmp/groff.log" ] || {
      cat "$tmp/groff.log" >&2
      fail "groff warns on $(basename "$page")"
    }
    LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l -Tutf8 "$page" 2>"$tmp/man.log" >/dev/null && [ ! -s "$tmp/man.log" ] || {
      cat "$tmp/man.log" >&2
      fail "man warns on $(basename "$page")"
    }
  done
  # A flag is described when it is the tag of a .TP paragraph (the line
  # after .TP) in its command's section.
  local cmd flag missing=
  for cmd in serve devices demo; do
    section "$page1" "${cmd^^}" | awk 'prev == ".TP" {print} {prev = $0}' >"$tmp/tags"
    for flag in $("$bin" "$cmd" --help | grep -oE '^ +--[a-z0-9-]+' | tr -d ' '); do
      grep -qE "^\.B[IR]? ${flag//-/\\\\-}( |\$)" "$tmp/tags" || missing+=" $cmd $flag"
    done
  done
  [ -z "$missing" ] || fail "telegate(1) does not describe:$missing"
  # libtg(3)'s example, unescaped, is examples/hello.c from its first #include.
  section "$page3" EXAMPLE | sed -n '/^\.RS$/,/^\.RE$/p' | sed '1d;$d' | sed 's/\\-/-/g; s/\\e/\\/g; s/^\\&//' >"$tmp/example.c"
  sed -n '/^#include <tg\/tg.h>/,$p' "$src/examples/hello.c" | diff -u - "$tmp/example.c" >&2 ||
    fail "libtg(3)'s EXAMPLE is not examples/hello.c"
  echo "man: telegate(1) and libtg(3) render without warnings and match --help and examples/hello.c"
}

# Polls (at most 600 times, 0.1 s apart) until the log names the HTTP port.
wait_http_port() {
  local i port
  for ((i = 0; i < 600; i++)); do
    port=$(grep -oE '/metrics on http://127\.0\.0\.1:[0-9]+/' "$1" | grep -oE '[0-9]+/$' | tr -d /) || true
    [ -n "$port" ] && echo "$port" && return 0
    kill -0 "$serve_pid" 2>/dev/null || break
    sleep 0.1
  done
  cat "$1" >&2
  fail "serve never said where /metrics is"
}

check_metrics() {
  command -v promtool >/dev/null || fail "no promtool: apt-get install prometheus (scripts/deps.sh does)"
  "$bin" --version | grep -qE '^telegate [0-9]+\.[0-9]+\.[0-9]+ \(libtg [0-9.]+, git [0-9a-z]+, [A-Za-z]+\)$' ||
    fail "--version printed '$("$bin" --version)'"
  "$bin" serve --db "$tmp/telegate.db" --listen-devices 127.0.0.1:0 --listen-http 127.0.0.1:0 >"$tmp/serve.log" 2>&1 &
  serve_pid=$!
  local port
  port=$(wait_http_port "$tmp/serve.log")
  curl -sSf --max-time 60 "http://127.0.0.1:$port/metrics" >"$tmp/metrics" || fail "GET /metrics"
  promtool check metrics <"$tmp/metrics" >"$tmp/promtool.log" 2>&1 || {
    cat "$tmp/promtool.log" >&2
    fail "promtool check metrics"
  }
  local name
  for name in telegate_build_info process_cpu_seconds_total process_resident_memory_bytes \
    process_virtual_memory_bytes process_open_fds process_max_fds process_start_time_seconds \
    telegate_readings_received_total; do
    grep -qE "^$name[{ ]" "$tmp/metrics" || fail "/metrics has no $name"
  done
  kill -TERM "$serve_pid"
  local status=0
  wait "$serve_pid" || status=$?
  serve_pid=
  [ "$status" -eq 0 ] || {
    cat "$tmp/serve.log" >&2
    fail "serve exited $status after SIGTERM"
  }
  echo "metrics: promtool accepts the /metrics of the installed telegate serve"
}

case $case_name in
  pkgconfig) check_pkgconfig ;;
  systemd) check_systemd ;;
  man) check_man ;;
  metrics) check_metrics ;;
  *) fail "unknown case '$case_name'" ;;
esac
