// dashboard.test.mjs - headless Chromium opens the dashboard while data
// flows, and checks what a person would: the device table fills and
// keeps updating, the pipeline diagram moves (backpressure included), the
// stream is live, a health check answers, the page has no errors (CSP
// violations included, so nothing is fetched from elsewhere), and a
// screenshot is saved.
//
//   node dashboard.test.mjs --feed <dashboard-feed binary> --out <dir>
//   node dashboard.test.mjs --serve <dashboard-serve binary> --devices-cmd <telegate> --out <dir>
//   node dashboard.test.mjs --serve ... --token T     # serve wants a bearer token
//
// The feed is a small simulated pipeline whose queues fill every few
// seconds, so the test also sees backpressure drawn. The serve mode runs
// telegate serve with the HTTP side, fed by the real simulator
// (`telegate devices`); its pipeline is too fast to push back at this
// rate, so there the diagram is checked for live counters instead. With
// --token, serve wants that bearer token for reads (its SHA-256 in a
// --token-file): the page is opened without it, asks for it, and must
// then work as without tokens. In serve mode the devices are stopped at
// the end, and every row must turn stale (serve runs with a 2 s
// --stale-after) with the summary saying so, no reading coming. Before
// that, a device of another kind writes a line of other fields (POST
// /write, as Telegraf would), and the table must show its names and
// values beside the article's.
//
// Needs Debian's chromium (/usr/bin/chromium, or $CHROMIUM) and
// playwright-core (npm ci in this directory). Exits 77 - ctest's skip -
// only when chromium is not installed.
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, a, i, all) => (a.startsWith("--") ? [...pairs, [a.slice(2), all[i + 1]]] : pairs), []),
);
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
const out = args.out || ".";
const DEVICES = 7;

if (!existsSync(chromiumPath)) {
  console.log(`SKIP: ${chromiumPath} not found - apt-get install chromium to run the browser test`);
  process.exit(77);
}
let chromium;
try {
  ({ chromium } = await import("playwright-core"));
} catch (e) {
  console.error("FAIL: playwright-core is not installed: run `npm ci --prefix tests/browser`");
  process.exit(1);
}
const serveMode = !!args.serve;
const server = serveMode ? args.serve : args.feed;
if (!server || !existsSync(server) || (serveMode && !existsSync(args["devices-cmd"] || ""))) {
  console.error("FAIL: give --feed BINARY, or --serve BINARY --devices-cmd TELEGATE");
  process.exit(1);
}
const token = args.token;
const shotName = token ? "dashboard-token.png" : serveMode ? "dashboard-serve.png" : "dashboard.png";

const children = [];
const userDataDir = mkdtempSync(join(tmpdir(), "telegate-chromium-"));
let context;
let simulator; // serve mode: the devices' process

function cleanup() {
  for (const c of children) if (c.exitCode === null) c.kill("SIGTERM");
  rmSync(userDataDir, { recursive: true, force: true });
}

function fail(msg) {
  throw new Error(msg);
}

// Starts the gateway (and, for serve, the simulated devices) and resolves
// with the dashboard's URL.
function startServer() {
  const argv = serveMode ? ["--duration", "90", "--stale-after-ms", "2000"]
    : ["--duration", "90", "--devices", String(DEVICES)];
  if (token) {
    const file = join(userDataDir, "read.tokens");
    writeFileSync(file, createHash("sha256").update(token).digest("hex") + "\n");
    argv.push("--token-file", file);
  }
  const proc = spawn(server, argv, { stdio: ["ignore", "pipe", "inherit"] });
  children.push(proc);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the server did not start listening in 10 s")), 10000);
    proc.on("exit", (code) => reject(new Error(`the server exited with ${code}`)));
    createInterface({ input: proc.stdout }).on("line", (line) => {
      const m = line.match(/^listening (http:\S+)(?: devices (\S+))?/);
      if (!m) return;
      clearTimeout(timer);
      if (serveMode) {
        const devices = spawn(args["devices-cmd"], ["devices", "--connect", m[2], "--count", String(DEVICES),
          "--rate", "20", "--duration", "80", "--quiet"], { stdio: ["ignore", "inherit", "inherit"] });
        children.push(devices);
        simulator = devices;
      }
      resolve(m[1]);
    });
  });
}

// Polls fn (in the page) until it returns a truthy value.
async function until(page, what, fn, arg, timeoutMs = 15000) {
  try {
    return await page.waitForFunction(fn, arg, { timeout: timeoutMs, polling: 100 });
  } catch (e) {
    fail(`timed out waiting for ${what}`);
  }
}

async function main() {
  const url = await startServer();
  console.log(`${serveMode ? "telegate serve" : "feed"} at ${url}`);
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: chromiumPath,
    headless: true,
    viewport: { width: 1280, height: 1000 },
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  const page = context.pages()[0] || (await context.newPage());
  const problems = [];
  page.on("console", (m) => {
    if (m.type() !== "error" && m.type() !== "warning") return;
    // the health checks below answer 503 and 504 on purpose; Chromium logs those
    if (/status of 50[34]/.test(m.text()) && /\/api\/devices\//.test(m.location().url)) return;
    // with a token, the first snapshot is asked for without one, on purpose
    if (token && /status of 401/.test(m.text()) && /\/api\/snapshot$/.test(m.location().url)) return;
    problems.push(`console ${m.type()}: ${m.text()} (${m.location().url})`);
  });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("requestfailed", (r) => { if (!r.url().includes("/api/stream")) problems.push(`request failed: ${r.url()}`); });
  page.on("request", (r) => { if (!r.url().startsWith(url) && !r.url().startsWith("data:")) problems.push(`request elsewhere: ${r.url()}`); });

  let asked = 0;
  if (token) page.on("dialog", (d) => { asked++; d.accept(token); });
  await page.goto(url, { waitUntil: "load" });
  await until(page, "the stream to be live", () => document.getElementById("conn").dataset.state === "live");
  if (token && asked !== 1) fail(`the page asked for the token ${asked} times, want 1`);

  // The table fills: one row per device, with readings.
  await until(page, `${DEVICES} device rows`, (n) => document.querySelectorAll("#devices tbody tr").length === n, DEVICES);
  const rowText = () => page.$$eval("#devices tbody tr", (rows) => rows.map((r) => r.innerText));
  const before = await rowText();
  const version0 = await page.evaluate(() => window.telegate.snapshot.version);
  console.log(`table filled at snapshot #${version0}:\n  ${before.join("\n  ")}`);
  for (const row of before) if (!/°C/.test(row) || !/%/.test(row)) fail(`row without readings: ${row}`);

  // ... and keeps updating: newer snapshots, counts that grow, sparklines.
  await until(page, "newer snapshots", (v) => window.telegate.snapshot.version >= v + 5, version0);
  await until(page, "readings counts to grow", (first) => {
    const now = [...document.querySelectorAll("#devices tbody td.count")].map((td) => Number(td.textContent.replace(/,/g, "")));
    return now.length === first.length && now.every((c, i) => c > first[i]);
  }, await page.$$eval("#devices tbody td.count", (tds) => tds.map((td) => Number(td.textContent.replace(/,/g, "")))));
  await until(page, "sparklines", () => [...document.querySelectorAll("svg.spark polyline")].every((p) => p.getAttribute("points").split(" ").length >= 3));
  const after = await rowText();
  if (after.join() === before.join()) fail("the table did not change");

  // Another kind of device: its fields get columns of their own, and
  // the fields it does not have show "–".
  let devices = DEVICES;
  if (serveMode) {
    const line = `cpu,host=h1 usage_idle=97.5,load=3i,throttled=true ${BigInt(Date.now()) * 1000000n}`;
    const r = await fetch(`${url}/write`, { method: "POST", body: line });
    if (r.status !== 204) fail(`POST /write answered ${r.status}: ${await r.text()}`);
    devices++;
    await until(page, "the row of h1", () => [...document.querySelectorAll("#devices td.name")].some((td) => td.textContent === "h1"));
    const h1 = await page.evaluate(() => {
      const tr = [...document.querySelectorAll("#devices tbody tr")].find((r) => r.querySelector("td.name").textContent === "h1");
      const cell = (name) => tr.querySelector(`td[data-field="${name}"]`)?.innerText.trim();
      const head = [...document.querySelectorAll("#devices thead th[data-field]")].map((th) => th.textContent);
      const tile = document.querySelector('.stats [data-fleet="usage_idle"] dt')?.textContent;
      return { head, tile, usage_idle: cell("usage_idle"), load: cell("load"), throttled: cell("throttled"),
        temperature: cell("temperature"), battery: cell("battery") };
    });
    console.log(`another device: ${JSON.stringify(h1)}`);
    const want = { usage_idle: "97.5", load: "3", throttled: "true", temperature: "–", battery: "–", tile: "avg usage_idle" };
    for (const [k, v] of Object.entries(want)) if (h1[k] !== v) fail(`h1's ${k} shows ${JSON.stringify(h1[k])}, want ${JSON.stringify(v)}`);
    for (const name of ["temperature", "humidity", "battery", "usage_idle", "load", "throttled"])
      if (!h1.head.includes(name)) fail(`no column ${name} in ${h1.head.join(", ")}`);
  }

  // The pipeline moves: queue gauges, permits, and backpressure happening
  // (the feed slows its aggregator for 4 s in every 12).
  await until(page, "pipeline figures", () => window.telegate.pipelines > 2);
  await until(page, "the diagram's readings to grow", () => {
    const t = document.getElementById("pipeline").textContent.match(/([\d,]+) readings/);
    return t && Number(t[1].replace(/,/g, "")) > 100;
  });
  if (!serveMode) await until(page, "backpressure on the telemetry queue", () => {
    const p = window.telegate.pipeline;
    return p.queues.telemetry.full_waits > 0 && p.queues.telemetry.len >= p.queues.telemetry.capacity * 0.8;
  }, undefined, 20000);
  const gauge = await page.evaluate(() => {
    const p = window.telegate.pipeline;
    return { len: p.queues.telemetry.len, cap: p.queues.telemetry.capacity, fullWaits: p.queues.telemetry.full_waits,
      bandwidth: p.semaphores.bandwidth.in_use, text: document.getElementById("pipeline").textContent };
  });
  console.log(`backpressure: telemetry ${gauge.len}/${gauge.cap}, ${gauge.fullWaits} full waits, ${gauge.bandwidth} permits in use`);
  if (!serveMode && !/full waits [1-9]/.test(gauge.text)) fail("the diagram does not show the full waits");

  // A health check on demand, from the table's button: over the device's
  // own connection with serve.
  await page.click('#devices tr[data-device="1"] button.check');
  await until(page, "device 1 healthy", () => /^ok /.test(document.querySelector('#devices tr[data-device="1"] .health').textContent));
  if (!serveMode) {
    await page.click('#devices tr[data-device="6"] button.check');
    await until(page, "device 6 disconnected", () => document.querySelector('#devices tr[data-device="6"] .health').textContent === "disconnected");
  }

  // The devices hang up: with no reading coming, every row turns stale.
  if (serveMode) {
    simulator.kill("SIGINT");
    await until(page, "every device shown stale", (n) => {
      const rows = [...document.querySelectorAll("#devices tbody tr")];
      return rows.length === n && rows.every((r) => r.dataset.stale === "1") &&
        /: 0 active, \d+ stale/.test(document.getElementById("devices-sub").textContent);
    }, devices, 30000);
    console.log(`stale: ${await page.$eval("#devices-sub", (e) => e.textContent)}`);
  }

  mkdirSync(out, { recursive: true });
  const shot = join(out, shotName);
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`screenshot: ${shot}`);
  if (problems.length) fail(`the page had problems:\n  ${problems.join("\n  ")}`);
}

let status = 0;
try {
  await main();
  console.log(`PASS: the dashboard filled and updated live${serveMode ? " on telegate serve" : " and showed backpressure"}` +
    (token ? ", with a bearer token" : ""));
} catch (e) {
  console.error(`FAIL: ${e.message}`);
  status = 1;
} finally {
  if (context) await context.close().catch(() => {});
  cleanup();
}
process.exit(status);
