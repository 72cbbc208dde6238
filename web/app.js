// telegate dashboard: the latest snapshot from /api/snapshot, then live
// updates from /api/stream (Server-Sent Events): `snapshot` and `resync`
// events redraw the device table, `pipeline` events the diagram of the
// pipeline (DESIGN.md) with its queues, permits, lag and backpressure
// counters. Devices send whatever fields they have: the table has a
// column per field name and the summary a tile per fleet mean.
// No library, no build step, nothing fetched from elsewhere.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const STREAM = "/api/stream?every=250&pipeline_ms=500";
const SPARK_POINTS = 60;
const ACTIVE_MS = 3000;
// A device shows at most 4 fields, but a fleet of different devices has
// more names: the table's field columns (and the summary's mean tiles)
// stop at what fits, the first names seen first.
const MAX_FIELDS = 6;
// The article's fields keep their units; any other field is a plain number.
const UNITS = new Map([["temperature", " °C"], ["humidity", " %"]]);

// A bearer token, when the gateway wants one (--http-token-read): from
// the address's #token=..., else asked for once; kept for this tab only,
// and taken out of the address so that it is not bookmarked or shared.
let token = new URLSearchParams(location.hash.slice(1)).get("token") || sessionStorage.getItem("telegate-token");
if (token) sessionStorage.setItem("telegate-token", token);
if (location.hash.includes("token=")) history.replaceState(null, "", location.pathname + location.search);
const authHeaders = () => (token ? { Authorization: `Bearer ${token}` } : {});
// EventSource cannot send headers: the stream takes the token in its URL.
const withToken = (url) => (token ? `${url}${url.includes("?") ? "&" : "?"}access_token=${encodeURIComponent(token)}` : url);

const $ = (id) => document.getElementById(id);
const num = new Intl.NumberFormat("en-US");
const n = (v) => (v === null || v === undefined ? "–" : num.format(v));
const fieldNum = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 });

// What the page knows; window.telegate lets tests and curious people look.
const state = {
  snapshot: null,
  receivedAt: 0,      // performance.now() when the snapshot arrived
  pipeline: null,
  rows: new Map(),    // device id -> table row parts
  spark: new Map(),   // device id -> its sparkline field's values, oldest first
  columns: [],        // the table's field names, first seen first
  floats: new Set(),  // field names known to be floats (in "fleet", or seen with a fraction)
  tiles: new Map(),   // fleet field name -> its summary tile's value
  health: new Map(),  // device name -> {result, latency_ms}
  rateSamples: [],    // [t ms, readings] over the last seconds
  events: 0, snapshots: 0, resyncs: 0, missed: 0, pipelines: 0,
};
window.telegate = state;

// ------------------------------------------------------------ helpers

function el(tag, attrs, parent, text) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}

function setText(e, text) {
  if (e.textContent !== text) e.textContent = text;
}

// A counter that flashes when it grows, so a person sees backpressure
// and lag happen rather than reading it off a number.
function counter(e, value) {
  const prev = e._value;
  e._value = value;
  setText(e, e._label + " " + n(value));
  if (prev !== undefined && value > prev) {
    e.classList.add("bump");
    clearTimeout(e._timer);
    e._timer = setTimeout(() => e.classList.remove("bump"), 800);
  }
}

function ago(ms) {
  if (ms < 0) return "never";
  if (ms < 1000) return (ms / 1000).toFixed(1) + " s ago";
  if (ms < 60000) return Math.round(ms / 1000) + " s ago";
  return Math.round(ms / 60000) + " min ago";
}

function duration(ms) {
  const s = Math.floor(ms / 1000);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h}h ${m}m` : m ? `${m}m ${s % 60}s` : `${s}s`;
}

function fillColour(frac) {
  return frac >= 0.9 ? "#d3402f" : frac >= 0.5 ? "#d98a00" : "#2f9e5b";
}

// ------------------------------------------------------------ the diagram

function node(root, x, y, w, h, title, lines) {
  const g = el("svg:g", { class: "node" }, root);
  el("svg:rect", { x, y, width: w, height: h, rx: 6 }, g);
  el("svg:text", { x: x + 10, y: y + 20, class: "title" }, g, title);
  const texts = [];
  for (let i = 0; i < (lines || 0); i++) texts.push(el("svg:text", { x: x + 10, y: y + 38 + i * 15, class: "dim" }, g, ""));
  return texts;
}

// A queue drawn as a bar filled to len/capacity, with its counters below.
function gauge(root, x, y, w, title, counters, neutral) {
  const label = el("svg:text", { x, y: y - 6, class: "label" }, root, title);
  el("svg:rect", { x, y, width: w, height: 18, rx: 3, class: "frame" }, root);
  const fill = el("svg:rect", { x: x + 1, y: y + 1, width: 0, height: 16, rx: 2, class: "fill" }, root);
  const value = el("svg:text", { x: x + w - 4, y: y + 13, "text-anchor": "end" }, root, "");
  const lines = counters.map((c, i) => {
    const t = el("svg:text", { x, y: y + 33 + i * 14 }, root, "");
    t._label = c;
    return t;
  });
  return {
    label, lines,
    set(len, cap) {
      const frac = cap ? Math.min(1, len / cap) : 0;
      fill.setAttribute("width", String(Math.round((w - 2) * frac)));
      fill.setAttribute("fill", neutral ? "#7d9bd1" : fillColour(frac));
      setText(value, `${n(len)} / ${n(cap)}`);
    },
  };
}

// A semaphore drawn as its permits, filled while held.
function semaphore(root, x, y, w, title, counters) {
  el("svg:text", { x, y: y - 6, class: "label" }, root, title);
  const g = el("svg:g", {}, root);
  const lines = counters.map((c, i) => {
    const t = el("svg:text", { x, y: y + 33 + i * 14 }, root, "");
    t._label = c;
    return t;
  });
  let drawn = -1;
  let slots = [];
  const value = el("svg:text", { x: x + w, y: y + 13, "text-anchor": "end" }, root, "");
  return {
    lines,
    set(permits, inUse) {
      const shown = Math.min(permits, 16);
      if (shown !== drawn) {
        g.replaceChildren();
        const size = Math.min(18, Math.floor((w - 60) / Math.max(shown, 1)) - 3);
        slots = [];
        for (let i = 0; i < shown; i++)
          slots.push(el("svg:rect", { x: x + i * (size + 3), y, width: size, height: 18, rx: 2, class: "slot" }, g));
        drawn = shown;
      }
      const held = permits > 16 ? Math.round((inUse / permits) * 16) : inUse;
      slots.forEach((s, i) => s.classList.toggle("held", i < held));
      setText(value, `${n(inUse)} / ${n(permits)}`);
    },
  };
}

function edge(root, d, dashed) {
  el("svg:path", { d, class: dashed ? "edge dash" : "edge" }, root);
}

function buildPipeline(root) {
  const defs = el("svg:defs", {}, root);
  const m = el("svg:marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, defs);
  el("svg:path", { d: "M0,0 L10,5 L0,10 z", fill: "#8b95a8" }, m);

  // edges first, so boxes and gauges sit on top
  edge(root, "M150,62 L408,62");                 // devices -> aggregator (telemetry)
  edge(root, "M550,62 L808,62");                 // aggregator -> clients (broadcast)
  edge(root, "M550,128 L808,128", true);         // aggregator -> clients (watch)
  edge(root, "M480,140 L480,205 L573,205");      // aggregator -> storage (batches)
  edge(root, "M715,205 L848,205");               // storage -> DB (pool)
  edge(root, "M240,280 L110,280 L110,152");      // health checker -> devices (request)
  edge(root, "M90,152 L90,300 L238,300", true);  // devices -> health checker (oneshot reply)

  const t = {};
  t.devices = node(root, 20, 30, 130, 120, "devices", 4);
  t.aggregator = node(root, 410, 30, 140, 110, "aggregator", 3);
  t.clients = node(root, 810, 30, 170, 110, "clients", 3);
  t.storage = node(root, 575, 180, 140, 70, "storage", 2);
  t.db = node(root, 850, 180, 130, 70, "database", 2);
  t.health = node(root, 240, 262, 170, 62, "health checker", 2);

  const g = {};
  g.telemetry = gauge(root, 175, 53, 210, "telemetry  mpsc", ["full waits", "senders waiting"]);
  // the ring always holds its last `capacity` snapshots: retained, not a
  // backlog, so it is not coloured as a queue filling up
  g.broadcast = gauge(root, 575, 53, 210, "snapshots  broadcast ring", ["lag events", "lagged messages"], true);
  g.storage = gauge(root, 300, 196, 150, "batches  mpsc", ["full waits", "senders waiting"]);
  const watch = el("svg:text", { x: 575, y: 123, class: "label" }, root, "latest  watch");
  const watchV = el("svg:text", { x: 785, y: 123, "text-anchor": "end" }, root, "");
  const s = {};
  s.bandwidth = semaphore(root, 175, 122, 210, "bandwidth  semaphore", ["waits", "waiters"]);
  s.db_pool = semaphore(root, 725, 270, 120, "db pool  semaphore", ["waits", "waiters"]);
  return { t, g, s, watch, watchV };
}

const P = buildPipeline($("pipeline"));

function drawPipeline(p) {
  const q = p.queues, b = p.broadcast, sem = p.semaphores;
  P.g.telemetry.set(q.telemetry.len, q.telemetry.capacity);
  counter(P.g.telemetry.lines[0], q.telemetry.full_waits);
  counter(P.g.telemetry.lines[1], q.telemetry.senders_waiting);
  P.g.broadcast.set(b.len, b.capacity);
  counter(P.g.broadcast.lines[0], b.lag_events);
  counter(P.g.broadcast.lines[1], b.lagged_messages);
  P.g.storage.set(q.storage.len, q.storage.capacity);
  counter(P.g.storage.lines[0], q.storage.full_waits);
  counter(P.g.storage.lines[1], q.storage.senders_waiting);
  P.s.bandwidth.set(sem.bandwidth.permits, sem.bandwidth.in_use);
  counter(P.s.bandwidth.lines[0], sem.bandwidth.waits);
  counter(P.s.bandwidth.lines[1], sem.bandwidth.waiters);
  P.s.db_pool.set(sem.db_pool.permits, sem.db_pool.in_use);
  counter(P.s.db_pool.lines[0], sem.db_pool.waits);
  counter(P.s.db_pool.lines[1], sem.db_pool.waiters);
  setText(P.watchV, `v${n(b.published)} · ${n(b.receivers)} receivers`);

  const [d0, d1, d2, d3] = P.t.devices;
  setText(d0, `${n(p.devices.connected)} connected`);
  setText(d1, `${n(p.devices.connections)} connections`);
  setText(d2, `${n(p.devices.lines)} lines`);
  setText(d3, `${n(sumBad(p.bad_input))} bad lines`);
  const [a0, a1, a2] = P.t.aggregator;
  setText(a0, `${n(p.readings.aggregated)} readings`);
  setText(a1, `${n(b.published)} snapshots`);
  setText(a2, `${n(p.batches.flushed)} batches cut`);
  const [c0, c1, c2] = P.t.clients;
  setText(c0, `${n(p.sse.clients)} streaming (SSE)`);
  setText(c1, `${n(p.sse.resyncs)} resyncs`);
  setText(c2, `${n(p.http.connections)} HTTP connections`);
  const [s0, s1] = P.t.storage;
  setText(s0, `${n(p.batches.stored)} batches stored`);
  setText(s1, `${n(p.batches.retries)} retries`);
  const [db0, db1] = P.t.db;
  setText(db0, `${n(p.readings.stored)} rows`);
  setText(db1, `${n(p.batches.transactions)} transactions`);
  const [h0, h1] = P.t.health;
  setText(h0, `ok ${n(p.health.ok)} · timeout ${n(p.health.timeout)}`);
  setText(h1, `disconnected ${n(p.health.disconnected)}`);
}

// ------------------------------------------------------------ panels

function sumBad(bad) {
  return Object.values(bad || {}).reduce((a, b) => a + b, 0);
}

function panel(id, pairs) {
  const dl = $(id);
  const cells = dl._cells || (dl._cells = new Map());
  for (const [k, v, hot] of pairs) {
    let dd = cells.get(k);
    if (!dd) {
      el("dt", {}, dl, k);
      dd = el("dd", {}, dl);
      cells.set(k, dd);
    }
    setText(dd, n(v));
    dd.classList.toggle("hot", !!hot && v > 0);
  }
}

function drawPanels(p) {
  panel("p-readings", [
    ["received", p.readings.received], ["aggregated", p.readings.aggregated],
    ["stored", p.readings.stored], ["duplicates dropped", p.readings.duplicate],
    ["batches lost", p.batches.lost, true],
  ]);
  panel("p-bad", Object.entries(p.bad_input).map(([k, v]) => [k.replaceAll("_", " "), v, true]));
  panel("p-health", [
    ["rounds", p.health.rounds], ["ok", p.health.ok], ["timeout", p.health.timeout, true],
    ["disconnected", p.health.disconnected, true], ["unknown device", p.health.unknown],
  ]);
  panel("p-clients", [
    ["streams open", p.sse.clients], ["snapshot events", p.sse.events], ["resyncs", p.sse.resyncs, true],
    ["dropped (stopped reading)", p.sse.dropped, true], ["HTTP requests", p.http.requests],
    ["this page's resyncs", state.resyncs, true],
  ]);
  setText($("s-uptime"), p.has_pipeline ? duration(p.uptime_ms) : "–");
  rate(p.has_pipeline ? p.readings.aggregated : null);
}

// Readings per second over the last few seconds.
function rate(total) {
  if (total === null && state.snapshot) total = state.snapshot.total_readings;
  if (total === null || total === undefined) return;
  const now = performance.now(), s = state.rateSamples;
  s.push([now, total]);
  while (s.length > 2 && now - s[0][0] > 5000) s.shift();
  if (s.length >= 2 && now > s[0][0]) {
    const r = ((s[s.length - 1][1] - s[0][1]) * 1000) / (now - s[0][0]);
    setText($("s-rate"), `${n(Math.round(r))}/s`);
  }
}

// ------------------------------------------------------------ devices

function sparkline(values) {
  if (values.length < 2) return { points: "", last: null };
  let lo = Math.min(...values), hi = Math.max(...values);
  if (hi - lo < 0.5) { const mid = (hi + lo) / 2; lo = mid - 0.25; hi = mid + 0.25; }
  const step = 138 / (SPARK_POINTS - 1), x0 = 139 - (values.length - 1) * step;
  const pts = values.map((v, i) => [x0 + i * step, 25 - ((v - lo) / (hi - lo)) * 22]);
  return { points: pts.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" "), last: pts[pts.length - 1] };
}

function healthCell(td, d) {
  const badge = el("span", { class: "health" }, td, "–");
  const button = el("button", { class: "check", type: "button", title: "ask the device now" }, td, "check");
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const r = await fetch(`/api/devices/${encodeURIComponent(d.name)}/health?timeout_ms=1000`,
        { headers: authHeaders() });
      const j = await r.json();
      state.health.set(d.name, { result: j.result || "error", latency_ms: j.latency_ms });
    } catch (e) {
      state.health.set(d.name, { result: "error" });
    } finally {
      button.disabled = false;
      drawHealth(d.name);
    }
  });
  return badge;
}

function drawHealth(name) {
  const row = [...state.rows.values()].find((r) => r.name === name);
  if (!row) return;
  const h = state.health.get(name) || (row.device.health ? { result: row.device.health } : null);
  const text = !h ? "–" : h.result === "ok" && h.latency_ms !== undefined ? `ok ${h.latency_ms.toFixed(1)} ms` : h.result;
  setText(row.health, text);
  row.health.className = "health " + (h ? h.result : "");
}

// A device's value of field `name`, undefined when it has none (the
// fields are the device's own names, so none may be read off Object).
function fieldOf(d, name) {
  return d.fields && Object.hasOwn(d.fields, name) ? d.fields[name] : undefined;
}

// A float is the device's running mean, an integer or boolean its last value.
function fieldText(name, v) {
  if (typeof v === "boolean") return String(v);
  if (typeof v !== "number") return "–";
  return UNITS.has(name) ? v.toFixed(1) + UNITS.get(name) : fieldNum.format(v);
}

// The field a device's sparkline follows: its temperature, else its first float.
function sparkField(d) {
  const names = Object.keys(d.fields || {});
  return names.includes("temperature") ? "temperature" : names.find((k) => state.floats.has(k));
}

// A field's cells are numbers but for the battery's bar.
const fieldAttrs = (name) => (name === "battery" ? { "data-field": name } : { class: "num", "data-field": name });

// A row's cell for field `name`, put before `before`; returns its setter.
function fieldCell(tr, name, before) {
  const td = el("td", fieldAttrs(name));
  tr.insertBefore(td, before);
  if (name !== "battery") return (v) => setText(td, fieldText(name, v));
  const box = el("span", { class: "battery" }, td);
  const fill = el("span", {}, box);
  const text = el("span", {}, td);
  return (v) => {
    box.hidden = typeof v !== "number";
    if (box.hidden) {
      setText(text, fieldText(name, v));
    } else {
      const bat = Math.max(0, Math.min(100, v));
      fill.style.width = bat + "%";
      box.className = "battery" + (bat < 20 ? " low" : bat < 50 ? " mid" : "");
      setText(text, `${fieldNum.format(bat)} %`);
    }
  };
}

function addColumn(name) {
  state.columns.push(name);
  const head = $("spark-head");
  head.before(el("th", fieldAttrs(name), null, name));
  for (const row of state.rows.values()) row.fields.set(name, fieldCell(row.tr, name, row.sparkTd));
}

function addRow(d) {
  const tr = el("tr", { "data-device": String(d.id) });
  const row = { tr, name: d.name, device: d, fields: new Map() };
  row.nameCell = el("td", { class: "name" }, tr, d.name);
  row.nodeCell = el("td", { class: "node" }, tr, d.node || "");
  row.sparkTd = el("td", {}, tr);
  const svg = el("svg:svg", { class: "spark", viewBox: "0 0 140 28" }, row.sparkTd);
  row.sparkTitle = el("svg:title", {}, svg, "");
  row.line = el("svg:polyline", { points: "" }, svg);
  row.dot = el("svg:circle", { r: 2, cx: -10, cy: -10 }, svg);
  for (const name of state.columns) row.fields.set(name, fieldCell(tr, name, row.sparkTd));
  row.seen = el("td", { class: "num seen" }, tr);
  row.count = el("td", { class: "num count" }, tr);
  row.health = healthCell(el("td", {}, tr), d);
  // keep the table ordered by device number
  const tbody = $("devices").tBodies[0];
  const after = [...tbody.rows].find((r) => Number(r.dataset.device) > d.id);
  tbody.insertBefore(tr, after || null);
  state.rows.set(d.id, row);
  return row;
}

function drawSpark(row, d, version) {
  const field = sparkField(d);
  if (field !== row.sparkField) {
    row.sparkField = field;
    state.spark.set(d.id, []);
    setText(row.sparkTitle, field || "");
  }
  const values = state.spark.get(d.id) || [];
  const v = field === undefined ? undefined : fieldOf(d, field);
  if (typeof v === "number" && row.lastVersion !== version) values.push(v);
  row.lastVersion = version;
  while (values.length > SPARK_POINTS) values.shift();
  state.spark.set(d.id, values);
  const sp = sparkline(values);
  row.line.setAttribute("points", sp.points);
  if (sp.last) { row.dot.setAttribute("cx", sp.last[0]); row.dot.setAttribute("cy", sp.last[1]); }
}

function drawDevices(s) {
  for (const d of s.devices) {
    if (!d.count && !d.connected) continue;
    for (const [name, v] of Object.entries(d.fields || {})) {
      if (typeof v === "number" && !Number.isInteger(v)) state.floats.add(name);
      if (state.columns.length < MAX_FIELDS && !state.columns.includes(name)) addColumn(name);
    }
    const row = state.rows.get(d.id) || addRow(d);
    row.device = d;
    if (row.name !== d.name) setText(row.nameCell, (row.name = d.name));
    setText(row.nodeCell, d.node || "");
    for (const [name, set] of row.fields) set(fieldOf(d, name));
    setText(row.count, n(d.count));
    drawSpark(row, d, s.version);
    drawHealth(d.name);
  }
  // In a cluster (serve --nats) each device names the node that aggregates
  // it: a column once there is more than one node.
  $("devices").classList.toggle("fleet", (s.nodes || 1) > 1);
  $("no-devices").hidden = state.rows.size > 0;
  const staleFor = s.stale_after_ms >= 1000 ? `${s.stale_after_ms / 1000} s` : `${s.stale_after_ms} ms`;
  setText($("devices-sub"), `${state.rows.size} devices: ${s.active_devices} active, ` +
    `${s.stale_devices} stale (silent for more than ${staleFor})`);
  ageTick();
}

// Ages move with the clock between snapshots. A snapshot is as old as
// the last change: serve's clock (uptime_ms of the pipeline figures, on
// the same clock as last_seen_ms) says how old a reading is now.
function ageTick() {
  const s = state.snapshot;
  if (!s) return;
  const p = state.pipeline;
  const now = p && p.has_pipeline && state.pipelineAt !== undefined
    ? p.uptime_ms + (performance.now() - state.pipelineAt)
    : s.at_ms + (performance.now() - state.receivedAt);
  for (const row of state.rows.values()) {
    const d = row.device;
    const age = d.count ? Math.max(0, now - d.last_seen_ms) : -1;
    setText(row.seen, ago(age));
    const staleMs = s.stale_after_ms || ACTIVE_MS;
    const stale = age < 0 || d.stale || age > staleMs;
    row.tr.classList.toggle("stale", stale);
    row.tr.dataset.stale = stale ? "1" : "0";
  }
}

// ------------------------------------------------------------ the feed

function drawSnapshot(s) {
  if (state.snapshot && s.version < state.snapshot.version) return; // an older answer
  state.snapshot = s;
  state.receivedAt = performance.now();
  setText($("s-version"), "#" + n(s.version));
  setText($("s-total"), n(s.total_readings));
  setText($("s-active"), s.stale_devices ? `${n(s.active_devices)} · ${n(s.stale_devices)} stale` : n(s.active_devices));
  drawFleet(s.fleet || {});
  drawDevices(s);
  if (!state.pipeline || !state.pipeline.has_pipeline) rate(null);
}

// The fleet's means of its float fields, a tile each; a name no active
// device has now keeps its tile, showing "–".
function drawFleet(fleet) {
  for (const name of Object.keys(fleet)) {
    state.floats.add(name);
    if (state.tiles.size < MAX_FIELDS && !state.tiles.has(name)) {
      const tile = el("div", { "data-fleet": name });
      el("dt", {}, tile, `avg ${name}`);
      state.tiles.set(name, el("dd", {}, tile));
      $("s-uptime").parentNode.before(tile);
    }
  }
  for (const [name, dd] of state.tiles) setText(dd, fieldText(name, Object.hasOwn(fleet, name) ? fleet[name] : null));
}

function drawFigures(p) {
  state.pipeline = p;
  state.pipelineAt = performance.now();
  drawPipeline(p);
  drawPanels(p);
}

function setConn(kind, text) {
  const c = $("conn");
  c.className = "badge " + kind;
  c.dataset.state = kind;
  setText(c, text);
}

async function first() {
  try {
    let r = await fetch("/api/snapshot", { cache: "no-store", headers: authHeaders() });
    if (r.status === 401) {
      token = prompt("This gateway wants a bearer token (--http-token-read):");
      if (token) sessionStorage.setItem("telegate-token", token);
      r = await fetch("/api/snapshot", { cache: "no-store", headers: authHeaders() });
    }
    const s = await r.json();
    drawFigures(s.pipeline);
    drawSnapshot(s);
  } catch (e) {
    setConn("down", "no gateway");
  }
}

function follow() {
  const es = new EventSource(withToken(STREAM));
  es.onopen = () => setConn("live", "live");
  es.onerror = () => setConn(es.readyState === EventSource.CLOSED ? "down" : "wait", "reconnecting…");
  es.addEventListener("snapshot", (e) => {
    state.events++;
    state.snapshots++;
    drawSnapshot(JSON.parse(e.data));
  });
  es.addEventListener("resync", (e) => {
    const r = JSON.parse(e.data);
    state.events++;
    state.resyncs++;
    state.missed += r.missed;
    const note = $("note");
    note.hidden = false;
    note.textContent = `This page fell behind and resynced at ${new Date().toLocaleTimeString()}: ` +
      `${n(r.missed)} updates skipped, jumped to the current state.`;
    drawSnapshot(r.snapshot);
  });
  es.addEventListener("pipeline", (e) => {
    state.pipelines++;
    drawFigures(JSON.parse(e.data));
  });
}

first().then(follow);
setInterval(ageTick, 250);
