# bench/lib.sh - sourced by the benchmarks that start servers of their
# own (after setting root and build):
#   bench_build         builds telegate (Release) in $build, sets telegate;
#   bench_workdir       makes $work and an empty pids array, and on EXIT
#                       stops every process in pids and removes $work;
#   bench_stop          stops every process in pids (for a script whose
#                       EXIT trap has more to do);
#   bench_wait_port P   waits up to 5 s for 127.0.0.1:P to accept.
bench_build() {
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$build" --target telegate -j "$(nproc)" >/dev/null
  telegate=$build/src/telegate
}

bench_stop() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}

bench_workdir() {
  work=$(mktemp -d)
  pids=()
  trap 'bench_stop; rm -rf "$work"' EXIT
}

bench_wait_port() {
  for _ in $(seq 500); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.01; done
}
