"""test-write-api.py - readings from the clients and agents people
already run, into `telegate serve`: the InfluxDB write API as InfluxDB's
own clients use it (python3-influxdb's write_points (v1), a v2 write with
a gzip body, every precision, a partial write naming the bad line, the
body limit, device credentials, any measurement, tags and field type),
and agents' JSON shapes (Telegraf's serializer, Fluent Bit's json_lines
and json, flat objects) on the device port and on POST /api/readings.
Each HTTP success is a commit: right after the 204, /metrics already
counts the points stored. The rows are read back from SQLite once serve
has stopped.

    /usr/bin/python3 tests/test-write-api.py BUILD/src/telegate
"""
import gzip
import hashlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

from influxdb import InfluxDBClient

TELEGATE = sys.argv.pop(1) if len(sys.argv) > 1 else "build-test/src/telegate"
PATIENCE_S = 60  # the bound on every wait; a busy machine is slow, never stuck
TS_MS = 1732590000123  # 2024-11-26T03:00:00.123Z
# The article's measurement declared: its three fields required, in range.
ARTICLE_SCHEMA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "telemetry.schema")
TOKEN = "influx-writer-0123456789abcdef0123456789"


class Serve:
    """`telegate serve` on free ports with a database in a temp dir."""

    def __init__(self, directory, *flags):
        self.db = os.path.join(directory, "telegate.db")
        self.log = open(os.path.join(directory, "serve.log"), "w+")
        Serve.started.append(self)
        self.proc = subprocess.Popen(
            [TELEGATE, "serve", "--listen-devices", "127.0.0.1:0", "--listen-http", "127.0.0.1:0",
             "--db", self.db, "--batch-age-ms", "20", *flags],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + PATIENCE_S
        self.port = None
        while self.port is None:
            self.log.seek(0)
            text = self.log.read()
            m = re.search(r"/metrics on http://127\.0\.0\.1:(\d+)/", text)
            if m:
                self.port = int(m.group(1))
                self.device_port = int(re.search(r"devices on 127\.0\.0\.1:(\d+)", text).group(1))
            elif self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("serve did not start: " + open(self.log.name).read())
            else:
                time.sleep(0.02)

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def stored(self):
        with urllib.request.urlopen(self.url("/metrics"), timeout=PATIENCE_S) as r:
            text = r.read().decode()
        return int(re.search(r"^telegate_readings_stored_total (\d+)$", text, re.M).group(1))

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(PATIENCE_S) == 0, open(self.log.name).read()

    def query(self, sql, *args):
        con = sqlite3.connect(self.db)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()

    def rows(self, device):
        con = sqlite3.connect(self.db)
        try:
            return con.execute("SELECT seq, ts_ms, temperature, humidity, battery FROM readings "
                               "WHERE device = ? ORDER BY seq", (device,)).fetchall()
        finally:
            con.close()


def post(serve, path, body, headers=None):
    """(status, body) of a POST."""
    req = urllib.request.Request(serve.url(path), data=body, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=PATIENCE_S) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def point(device, ts, temperature, battery=80):
    return {"measurement": "telemetry", "tags": {"device": device}, "time": ts,
            "fields": {"temperature": temperature, "humidity": 40.5, "battery": battery}}


class ServeCase(unittest.TestCase):
    """Each test's serve processes and temp dir, gone after it."""

    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        Serve.started = []

    def tearDown(self):
        for serve in Serve.started:  # a failed test leaves none running, and shows how serve ended
            if serve.proc.poll() is None:
                serve.proc.kill()
                serve.proc.wait()
            elif serve.proc.returncode != 0:
                serve.log.seek(0)
                sys.stderr.write("serve exited %d:\n%s" % (serve.proc.returncode, serve.log.read()[-4000:]))
            serve.log.close()
        self.dir.cleanup()


class InfluxWrite(ServeCase):
    def test_v1_client_every_precision(self):
        serve = Serve(self.dir.name)
        client = InfluxDBClient(host="127.0.0.1", port=serve.port, database="telegraf", timeout=PATIENCE_S)
        # python-influxdb writes the time in the precision it is told.
        for i, (precision, ts) in enumerate([("s", TS_MS // 1000), ("ms", TS_MS), ("u", TS_MS * 1000),
                                             ("n", TS_MS * 1000000), ("m", TS_MS // 60000), ("h", TS_MS // 3600000)]):
            self.assertTrue(client.write_points([point("py-%s" % precision, ts, 20.0 + i)], time_precision=precision))
            self.assertGreaterEqual(serve.stored(), i + 1)  # the 204 came after the commit
        # A batch of many points, one device, no timestamps in the points
        # but the ones given: seqs numbered in order.
        batch = [point("py-batch", TS_MS + k, 21.0, battery=k % 101) for k in range(500)]
        self.assertTrue(client.write_points(batch, time_precision="ms", batch_size=250))
        self.assertGreaterEqual(serve.stored(), 506)
        serve.stop()
        want = {"s": TS_MS // 1000 * 1000, "ms": TS_MS, "u": TS_MS, "n": TS_MS,
                "m": TS_MS // 60000 * 60000, "h": TS_MS // 3600000 * 3600000}
        for i, precision in enumerate(["s", "ms", "u", "n", "m", "h"]):
            self.assertEqual(serve.rows("py-" + precision), [(1, want[precision], 20.0 + i, 40.5, 80)])
        rows = serve.rows("py-batch")
        self.assertEqual([r[0] for r in rows], list(range(1, 501)))
        self.assertEqual([r[1] for r in rows], [TS_MS + k for k in range(500)])
        self.assertEqual([r[4] for r in rows], [k % 101 for k in range(500)])

    def test_v2_gzip_partial_and_limits(self):
        serve = Serve(self.dir.name, "--http-max-write-bytes", "131072", "--schema", ARTICLE_SCHEMA)
        lines = "\n".join("telemetry,device=gz temperature=%d.5,humidity=41,battery=90i,seq=%di %d" %
                          (k % 50, k + 1, (TS_MS + k) * 1000000) for k in range(1000))
        status, body = post(serve, "/api/v2/write?org=o&bucket=b", gzip.compress(lines.encode()),
                            {"Content-Encoding": "gzip"})
        self.assertEqual(status, 204, body)
        self.assertGreaterEqual(serve.stored(), 1000)
        # The same lines again: they carry seq, so they are resends, stored once.
        status, _ = post(serve, "/api/v2/write?org=o&bucket=b", gzip.compress(lines.encode()),
                         {"Content-Encoding": "gzip"})
        self.assertEqual(status, 204)
        # A partial write: the good lines are committed, the first bad one named.
        status, body = post(serve, "/api/v2/write?precision=ms",
                            b"telemetry,device=part temperature=1,humidity=2,battery=3i 1732590000000\n"
                            b"telemetry,device=part temperature=999,humidity=2,battery=3i 1732590000001\n"
                            b"telemetry,device=part temperature=2,humidity=2,battery=3i 1732590000002\n")
        self.assertEqual(status, 400)
        error = json.loads(body)
        self.assertEqual(error["code"], "invalid")
        self.assertIn("temperature=999", error["message"])
        self.assertIn("out_of_range (line 2)", error["message"])
        status, body = post(serve, "/write?precision=ms", b"telemetry,device=part temperature=1 1732590000000\n")
        self.assertEqual(status, 400)
        self.assertIn("missing_field", json.loads(body)["error"])  # v1's shape
        # Seconds sent as nanoseconds would be 1970: refused.
        status, body = post(serve, "/write", b"telemetry,device=secs temperature=1,humidity=2,battery=3i 1732590000\n")
        self.assertEqual(status, 400)
        self.assertIn("out_of_range", json.loads(body)["error"])
        # Past the limit, as sent and as inflated: 413, nothing written.
        big = ("telemetry,device=big temperature=1,humidity=2,battery=3i 1732590000000000000\n" * 2000).encode()
        self.assertEqual(post(serve, "/write", big)[0], 413)
        self.assertEqual(post(serve, "/write", gzip.compress(big), {"Content-Encoding": "gzip"})[0], 413)
        self.assertEqual(post(serve, "/write", b"\x1f\x8b not gzip", {"Content-Encoding": "gzip"})[0], 400)
        self.assertEqual(post(serve, "/write?precision=fortnight", b"")[0], 400)
        with urllib.request.urlopen(serve.url("/ping"), timeout=PATIENCE_S) as r:
            self.assertEqual(r.status, 204)
        with urllib.request.urlopen(serve.url("/health"), timeout=PATIENCE_S) as r:  # InfluxDB 2's probe
            self.assertEqual(json.loads(r.read())["status"], "pass")
        serve.stop()
        rows = serve.rows("gz")
        self.assertEqual(len(rows), 1000)
        self.assertEqual(rows[999], (1000, TS_MS + 999, 49.5, 41.0, 90))
        self.assertEqual([r[0] for r in serve.rows("part")], [1, 2])
        self.assertEqual(serve.rows("big"), [])

    def test_any_measurement_tags_and_types(self):
        """Telegraf's points as its outputs.influxdb sends them: any
        measurement, a host tag for the device, more tags, every field
        type; each measurement a table, each field a column, as sent."""
        serve = Serve(self.dir.name)
        client = InfluxDBClient(host="127.0.0.1", port=serve.port, database="telegraf", timeout=PATIENCE_S)
        client.create_database("telegraf")  # what Telegraf's outputs.influxdb does at start: POST /query
        with self.assertRaises(Exception):
            client.query("SELECT * FROM cpu")  # telegate takes writes, not queries: a 400 the client raises
        points = [{"measurement": "cpu", "tags": {"host": "h1", "cpu": "cpu%d" % c}, "time": TS_MS + c,
                   "fields": {"usage_idle": 97.5 - c, "usage_user": 1.25}} for c in range(2)]
        points.append({"measurement": "mem", "tags": {"host": "h1"}, "time": TS_MS,
                       "fields": {"used": 8123456789, "available_percent": 55.5, "swapping": True,
                                  "note": 'say "hi", then\\go'}})
        self.assertTrue(client.write_points(points, time_precision="ms"))
        # Line protocol as written by hand: escapes in the measurement, tag and field keys.
        status, body = post(serve, "/api/v2/write?precision=ms",
                            b"disk\\ io,host=h2,path=/var/lib\\ x read\\ bytes=12i,ok=f 1732590000123\n")
        self.assertEqual(status, 204, body)
        # A field keeps its first type: a string where a float was is refused, by name.
        status, body = post(serve, "/api/v2/write?precision=ms",
                            b'cpu,host=h1,cpu=cpu9 usage_idle="high" 1732590000500\n')
        self.assertEqual(status, 400)
        self.assertIn("type_conflict (line 1)", json.loads(body)["message"])
        serve.stop()
        self.assertEqual(serve.query("SELECT device, seq, ts_ms, cpu, usage_idle, usage_user FROM cpu ORDER BY ts_ms"),
                         [("h1", 1, TS_MS, "cpu0", 97.5, 1.25), ("h1", 2, TS_MS + 1, "cpu1", 96.5, 1.25)])
        self.assertEqual(serve.query("SELECT device, used, available_percent, swapping, note, typeof(used) FROM mem"),
                         [("h1", 8123456789, 55.5, 1, 'say "hi", then\\go', "integer")])
        self.assertEqual(serve.query('SELECT device, path, "read bytes", ok FROM "disk io"'),
                         [("h2", "/var/lib x", 12, 0)])

    def test_credentials(self):
        path = os.path.join(self.dir.name, "credentials")
        with open(path, "w") as f:
            f.write("writer %s site-*\n" % hashlib.sha256(TOKEN.encode()).hexdigest())
        serve = Serve(self.dir.name, "--credentials", path)
        line = b"telemetry,device=site-1 temperature=1,humidity=2,battery=3i 1732590000000000000\n"
        self.assertEqual(post(serve, "/api/v2/write", line)[0], 401)
        self.assertEqual(post(serve, "/api/v2/write", line, {"Authorization": "Token wrong-token-123"})[0], 401)
        self.assertEqual(post(serve, "/api/v2/write", line, {"Authorization": "Token " + TOKEN})[0], 204)
        # v1 clients give it as their password.
        client = InfluxDBClient(host="127.0.0.1", port=serve.port, username="any", password=TOKEN,
                                database="d", timeout=PATIENCE_S)
        self.assertTrue(client.write_points([point("site-2", TS_MS, 22.0)], time_precision="ms"))
        self.assertEqual(post(serve, "/write?u=any&p=" + TOKEN, line)[0], 204)
        # A device the credential does not cover is refused, line by line.
        status, body = post(serve, "/api/v2/write", line.replace(b"site-1", b"other"),
                            {"Authorization": "Token " + TOKEN})
        self.assertEqual(status, 400)
        self.assertIn("not_allowed", json.loads(body)["message"])
        serve.stop()
        self.assertEqual(len(serve.rows("site-1")), 2)
        self.assertEqual(len(serve.rows("site-2")), 1)
        self.assertEqual(serve.rows("other"), [])


class Agents(ServeCase):
    """Agents' JSON as they send it, on the device port and over HTTP."""

    def wait_stored(self, serve, n):
        deadline = time.monotonic() + PATIENCE_S
        while serve.stored() < n:
            self.assertLess(time.monotonic(), deadline, "stored %d of %d" % (serve.stored(), n))
            time.sleep(0.02)

    def test_json_shapes_on_the_device_port_and_http(self):
        serve = Serve(self.dir.name)
        ts_s = TS_MS // 1000
        lines = [
            # Telegraf's JSON serializer: nested fields and tags, the host tag the device, seconds.
            '{"fields":{"usage_idle":97.5,"usage_user":1.25},"name":"cpu",'
            '"tags":{"cpu":"cpu0","host":"tg-1"},"timestamp":%d}' % ts_s,
            # Fluent Bit's json_lines: a float "date" in seconds, flat fields.
            '{"date":%d.123,"device":"fb-1","cpu_p":3.5,"user_p":1.0}' % ts_s,
            # ... and with json_date_format iso8601.
            '{"date":"2024-11-26T03:00:00.456Z","device":"fb-2","cpu_p":4.5}',
            # A flat object: "measurement", a nanosecond "time", a string, a boolean, a null (no value).
            '{"measurement":"door","device":"d-1","time":%d,"open":true,"who":"Zo\\u00eb","note":null}'
            % (TS_MS * 1000000),
            # Telegraf's line protocol: the host tag is the device.
            "mem,host=tg-1 used=123i,available_percent=55.5 %d" % (TS_MS * 1000000),
        ]
        with socket.create_connection(("127.0.0.1", serve.device_port), timeout=PATIENCE_S) as s:
            s.sendall(("\n".join(lines) + "\n").encode())
            self.wait_stored(serve, len(lines))
        # Over HTTP: Fluent Bit's json (an array), Telegraf's batch, JSON lines.
        array = json.dumps([{"date": ts_s + 1.5, "device": "fb-1", "cpu_p": 5.5}])
        batch = json.dumps({"metrics": [{"fields": {"usage_idle": 90.0}, "name": "cpu",
                                         "tags": {"cpu": "cpu1", "host": "tg-1"}, "timestamp": ts_s + 2}]})
        ndjson = '{"date":%d,"device":"fb-3","cpu_p":1}\n{"date":%d,"device":"fb-3","cpu_p":2}\n' % (ts_s, ts_s + 1)
        for body in (array, batch, ndjson):
            status, text = post(serve, "/api/readings", body.encode(), {"Content-Type": "application/json"})
            self.assertEqual(status, 204, text)
        self.assertGreaterEqual(serve.stored(), len(lines) + 4)
        status, text = post(serve, "/api/readings", b'{"type":"hello","acks":true}')
        self.assertEqual(status, 400)  # a hello is the device port's
        self.assertIn("unknown_type (line 1)", json.loads(text)["message"])
        status, text = post(serve, "/api/readings", b'[{"device":"x","date":1,"v":1}]')
        self.assertEqual(status, 400)  # 1970: a date that is no time of a reading
        self.assertIn("out_of_range (line 1)", json.loads(text)["message"])
        serve.stop()
        self.assertEqual(serve.query("SELECT device, ts_ms, cpu, usage_idle, usage_user FROM cpu ORDER BY ts_ms"),
                         [("tg-1", ts_s * 1000, "cpu0", 97.5, 1.25), ("tg-1", ts_s * 1000 + 2000, "cpu1", 90.0, None)])
        self.assertEqual(serve.query("SELECT device, ts_ms, cpu_p, user_p FROM readings ORDER BY device, ts_ms"),
                         [("fb-1", ts_s * 1000 + 123, 3.5, 1.0), ("fb-1", ts_s * 1000 + 1500, 5.5, None),
                          ("fb-2", 1732590000456, 4.5, None), ("fb-3", ts_s * 1000, 1.0, None),
                          ("fb-3", ts_s * 1000 + 1000, 2.0, None)])
        self.assertEqual(serve.query("SELECT device, ts_ms, open, who FROM door"), [("d-1", TS_MS, 1, "Zo\u00eb")])
        self.assertNotIn("note", [c[1] for c in serve.query("PRAGMA table_info(door)")])  # null: no value, no column
        self.assertEqual(serve.query("SELECT device, used, available_percent FROM mem"), [("tg-1", 123, 55.5)])


    def test_configured_keys(self):
        """Flat objects whose device and time are under other names."""
        serve = Serve(self.dir.name, "--json-device-key", "sensor", "--json-time-key", "t")
        with socket.create_connection(("127.0.0.1", serve.device_port), timeout=PATIENCE_S) as s:
            s.sendall(b'{"sensor":"s-1","t":1732590000.25,"v":1.5}\n{"sensor":"s-1","t":"2024-11-26T03:00:01Z","v":2}\n')
            self.wait_stored(serve, 2)
        serve.stop()
        self.assertEqual(serve.query("SELECT device, ts_ms, v FROM readings ORDER BY ts_ms"),
                         [("s-1", 1732590000250, 1.5), ("s-1", 1732590001000, 2.0)])


if __name__ == "__main__":
    unittest.main(verbosity=2, warnings="ignore")  # the client library leaves pooled sockets to the GC
