#!/usr/bin/env bash
# bench/http-fleet.sh - does the HTTP side starve the devices of a big
# fleet? serve with DEVICES devices (100,000) that keep sending, CLIENTS
# HTTP clients (64) asking /api/snapshot as fast as they can, STREAMS
# clients (250) that open /api/stream and never read, and one probe
# device that sends a bad line every PROBE_MS (100) and times the error
# line coming back: the device round trip, through the same workers as
# everything else. Prints its p50/p99/max, the HTTP requests served, and
# serve's RSS (now and peak, /proc/PID/status), the probes over 50 ms with
# when they happened, and the streams' figures from /metrics - and exits
# 1 when p99 is over 50 ms or the peak RSS over 512 MiB.
#
#   bench/http-fleet.sh                         # the defaults above, 20 s
#   DURATION=60 STREAMS=500 bench/http-fleet.sh
#   QUERY='?limit=10000' bench/http-fleet.sh    # bigger pages
#
# Environment: BUILD (build-release), WORKERS (serve's, 1), DURATION (s),
# DEVICES, RATE (readings/s over the fleet, 20000), CLIENTS, STREAMS,
# PROBE_MS, QUERY (of /api/snapshot), SERVE_FLAGS.
#
# The HTTP clients and streams connect from 127.0.0.2 .. 127.0.0.101 (the
# loopback's other addresses), as many clients would from their own: from
# one address, --http-max-per-client (16) would refuse most of them.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
build=${BUILD:-$root/build-release}
workers=${WORKERS:-1}
duration=${DURATION:-20}
devices=${DEVICES:-100000}
rate=${RATE:-20000}
clients=${CLIENTS:-64}
streams=${STREAMS:-250}
probe_ms=${PROBE_MS:-100}
query=${QUERY:-}
dport=$((20000 + RANDOM % 20000))
hport=$((dport + 1))

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j "$(nproc)" --target telegate >/dev/null
tmp=$(mktemp -d)
trap 'kill "$serve_pid" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"' EXIT

# A few connections speak for the whole fleet (a concentrator's shape), so
# the per-connection cap on ids (1,000 by default) is lifted: with it the
# fleet stopped at 8,001 devices and the figures meant nothing.
# shellcheck disable=SC2086 # SERVE_FLAGS is a list of flags
"$build/src/telegate" serve --storage none --db "$tmp/db" --quiet --workers "$workers" \
  --listen-devices "127.0.0.1:$dport" --listen-http "127.0.0.1:$hport" \
  --max-devices "$((devices + 1))" --max-ids-per-connection 0 --max-connections 100 --http-max-connections 1024 \
  --health-interval-ms 0 ${SERVE_FLAGS:-} >"$tmp/serve.out" 2>&1 &
serve_pid=$!

status=0
python3 - "$dport" "$hport" "$serve_pid" "$duration" "$devices" "$rate" "$clients" "$streams" "$probe_ms" "$query" <<'EOF' || status=$?
import asyncio, multiprocessing, socket, sys, time

dport, hport, pid, duration, ndev, rate, nclients, nstreams, probe_ms = map(int, sys.argv[1:10])
query = sys.argv[10]
FEEDERS = 8

def rss():
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, v = line.split(":", 1)
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) // 1024
    return out

async def wait_port(port):
    for _ in range(500):
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.02)
    sys.exit("serve did not listen")

async def connect_from(i, port):
    s = socket.socket()
    s.bind((f"127.0.0.{2 + i % 100}", 0))
    s.setblocking(False)
    await asyncio.get_running_loop().sock_connect(s, ("127.0.0.1", port))
    return s

async def feeder(k, stop, seq):
    """Devices k, k+FEEDERS, ... in turn, rate/FEEDERS readings a second."""
    r, w = await asyncio.open_connection("127.0.0.1", dport)
    async def drain():  # error lines, if any: never let them fill up
        while await r.read(65536):
            pass
    asyncio.ensure_future(drain())
    ids = list(range(k, ndev, FEEDERS))
    per_tick = max(1, rate // FEEDERS // 100)
    i = 0
    while not stop.is_set():
        lines = []
        for _ in range(per_tick):
            d = ids[i % len(ids)]
            seq[d] += 1
            lines.append('{"device":"d%d","seq":%d,"ts":1732590000000,"temperature":21.5,"humidity":40.0,"battery":80}\n' % (d, seq[d]))
            i += 1
        w.write("".join(lines).encode())
        await w.drain()
        await asyncio.sleep(0.01)
    w.close()

async def fill(seq):
    """Every device once, so the snapshot holds the whole fleet."""
    r, w = await asyncio.open_connection("127.0.0.1", dport)
    for start in range(0, ndev, 1000):
        w.write("".join('{"device":"d%d","seq":1,"ts":1732590000000,"temperature":20,"humidity":40,"battery":90}\n' % d
                        for d in range(start, min(ndev, start + 1000))).encode())
        await w.drain()
    for d in range(ndev):
        seq[d] = 1
    w.close()

async def http_client(i, stop, served, failed):
    s = await connect_from(i, hport)
    loop = asyncio.get_running_loop()
    req = f"GET /api/snapshot{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    buf = b""
    while not stop.is_set():
        await loop.sock_sendall(s, req)
        while True:  # one response: the head, then Content-Length bytes
            h = buf.find(b"\r\n\r\n")
            if h >= 0:
                head = buf[:h].decode("latin-1")
                n = int([l.split(":")[1] for l in head.split("\r\n") if l.lower().startswith("content-length")][0])
                if len(buf) >= h + 4 + n:
                    buf = buf[h + 4 + n:]
                    (served if head.startswith("HTTP/1.1 200") else failed).append(1)
                    break
            chunk = await loop.sock_recv(s, 1 << 20)
            if not chunk:
                s.close()
                s = await connect_from(i, hport)
                buf = b""
                await loop.sock_sendall(s, req)
                continue
            buf += chunk
    s.close()

async def stream_client(i, held):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.bind((f"127.0.0.{2 + i % 100}", 0))
    s.setblocking(False)
    await asyncio.get_running_loop().sock_connect(s, ("127.0.0.1", hport))
    await asyncio.get_running_loop().sock_sendall(s, b"GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    held.append(s)  # and never read

def probe(stop, out):
    """In a process of its own, so that the load's event loop cannot delay it."""
    s = socket.create_connection(("127.0.0.1", dport))
    f = s.makefile("rb")
    rtts, seq = [], 0
    while not stop.is_set():
        t0 = time.monotonic()
        # a reading first: a connection of nothing but bad lines is closed after --error-limit
        seq += 1
        s.sendall(b'{"device":"probe","seq":%d,"ts":1732590000000,"temperature":1,"humidity":1,"battery":1}\nthis is not a reading\n' % seq)
        if not f.readline():
            break
        rtts.append(((time.monotonic() - t0) * 1000, t0))
        stop.wait(probe_ms / 1000)
    out.send(rtts)

def start_probe():
    stop = multiprocessing.Event()
    here, there = multiprocessing.Pipe()
    p = multiprocessing.Process(target=probe, args=(stop, there))
    p.start()
    return stop, here, p

def end_probe(probe):
    stop, here, p = probe
    stop.set()
    rtts = here.recv()
    p.join()
    if rtts:
        slow = [(round(ms), round(at - rtts[0][1], 1)) for ms, at in rtts if ms > 50]
        if slow:
            print("probes over 50 ms (ms, at s):", slow[:12], file=sys.stderr)
    return sorted(ms for ms, _ in rtts)

async def main():
    await wait_port(dport)
    await wait_port(hport)
    seq = [0] * ndev
    await fill(seq)
    stop = asyncio.Event()
    served, failed, held = [], [], []
    idle = rss()
    tasks = [asyncio.ensure_future(feeder(k, stop, seq)) for k in range(FEEDERS)]
    before = start_probe()
    await asyncio.sleep(2)
    baseline = end_probe(before)
    baseline = baseline[len(baseline) // 2] if baseline else float("nan")
    for i in range(nstreams):
        await stream_client(i, held)
    tasks += [asyncio.ensure_future(http_client(i, stop, served, failed)) for i in range(nclients)]
    during = start_probe()
    peak_now = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < duration:
        await asyncio.sleep(0.5)
        peak_now = max(peak_now, rss()["VmRSS"])
    rtts = end_probe(during)
    stop.set()
    elapsed = time.monotonic() - t0
    end = rss()
    for t in tasks:
        t.cancel()
    for s in held:
        s.close()
    pick = lambda q: rtts[min(len(rtts) - 1, int(q * len(rtts)))]
    p99 = pick(0.99)
    print(f"devices {ndev}, {nclients} HTTP clients on /api/snapshot{query}, {nstreams} streams that never read, "
          f"{duration} s")
    print(f"device round trip: before the clients p50 {baseline:.1f} ms; with them p50 {pick(0.5):.1f} ms, "
          f"p99 {p99:.1f} ms, max {rtts[-1]:.1f} ms ({len(rtts)} probes)")
    print(f"/api/snapshot: {len(served) / elapsed:.0f} req/s served, {len(failed)} not 200")
    print(f"serve RSS: idle {idle['VmRSS']} MiB, most seen {peak_now} MiB, peak (VmHWM) {end['VmHWM']} MiB")
    ok = p99 <= 50 and end["VmHWM"] <= 512
    print("PASS" if ok else "FAIL: wanted p99 <= 50 ms and peak RSS <= 512 MiB")
    sys.exit(0 if ok else 1)

asyncio.run(main())
EOF
curl -s "http://127.0.0.1:$hport/metrics" | grep -E '^telegate_(sse_(json|deferred|dropped|clients)|http_connections_rejected|devices_(known|active|stale))' || true
exit $status
