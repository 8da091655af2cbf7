// First-paint benchmark of the web UI (run by hand; a measurement, not a test):
//
//   cargo build --release
//   node collector/ui/tests/firstpaint.mjs [--events 1000000] [--baseline 10000] [--runs 5]
//        [--spoor PATH]     (default $SPOOR_BIN, else $CARGO_TARGET_DIR/release/spoor,
//                            else target/release/spoor)
//
// For each size (the baseline first, then the big one) it starts a collector on a fresh
// data directory, fills it with corpus lines (../shared/corpus/loghub, repeated) turned
// into logfmt events spread over the last 24 hours, waits until all are searchable, then
// opens the UI in headless chromium `runs` times per query and reads the time from
// navigation start to the first result rows on the page (the `spoor-first-results` User
// Timing mark, set after the frame holding them) and the first contentful paint. It prints
// medians and the ratio big / baseline.
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, existsSync, openSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launch } from './lib.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../../..');
const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : dflt;
};
const EVENTS = Number(arg('events', '1000000'));
const BASELINE = Number(arg('baseline', '10000'));
const RUNS = Number(arg('runs', '5'));
const SPOOR = arg('spoor', process.env.SPOOR_BIN ||
  join(process.env.CARGO_TARGET_DIR || join(repo, 'target'), 'release/spoor'));
const CORPUS = arg('corpus', resolve(repo, '../shared/corpus/loghub'));
const QUERIES = [
  ['everything, last 24 h', '/?from=24h'],
  ['term `failed`, last 24 h', '/?q=failed&from=24h'],
  ['`level:error`, last 24 h', '/?q=level%3Aerror&from=24h'],
];
if (!existsSync(SPOOR)) {
  console.error(`no spoor binary at ${SPOOR}: build it (cargo build --release) or pass --spoor PATH`);
  process.exit(2);
}

const lines = readdirSync(CORPUS).filter((f) => f.endsWith('.log')).sort()
  .flatMap((f) => readFileSync(join(CORPUS, f), 'utf8').split('\n').filter((l) => l.trim()));
const LEVELS = ['info', 'info', 'info', 'warn', 'error', 'debug'];
const TASKS = ['charge', 'parse_email', 'send_receipt', 'resize_image', 'sync_ledger'];
const quote = (s) => '"' + s.replace(/\\/g, '\\\\').replace(/"/g, '\\"') + '"';

// Event i: a corpus line as `msg` (a prime stride mixes the five logs), stamped so the
// events spread evenly over the last 24 h.
function event(i, n, now) {
  const ts = new Date(now - 86_400_000 + Math.floor((i * 86_400_000) / n)).toISOString();
  return `ts=${ts} level=${LEVELS[i % LEVELS.length]} task=${TASKS[i % TASKS.length]} ` +
    `host=web-${i % 7} msg=${quote(lines[(i * 7919) % lines.length])}`;
}

function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.on('error', fail);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => ok(port)); });
  });
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function startCollector() {
  const dir = mkdtempSync(join(tmpdir(), 'spoor-firstpaint-'));
  const port = await freePort();
  const child = spawn(SPOOR, ['collector', '--data-dir', join(dir, 'data'), '--listen', `127.0.0.1:${port}`],
    { stdio: ['ignore', 'ignore', openSync(join(dir, 'collector.log'), 'a')], env: Object.assign({}, process.env, { SPOOR_LOG: process.env.SPOOR_LOG || 'warn' }) });
  let exited = null;
  child.on('exit', (code, signal) => {
    exited = `${code ?? signal}`;
    if (!stopping) console.error(`the collector exited (${exited}); its log:\n${readFileSync(join(dir, 'collector.log'), 'utf8')}`);
  });
  let stopping = false;
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    try { if ((await fetch(`${url}/healthz`)).ok) break; } catch (_) { /* not up yet */ }
    if (i > 600 || exited !== null) throw new Error('the collector did not start');
    await sleep(50);
  }
  return { url, stop: () => { stopping = true; child.kill('SIGKILL'); rmSync(dir, { recursive: true, force: true }); } };
}

async function total(url) {
  const r = await fetch(`${url}/api/v1/search?limit=0`);
  const body = await r.json();
  if (!r.ok) throw new Error(`search answered ${r.status}: ${JSON.stringify(body)}`);
  return body.total;
}

async function fill(url, n) {
  const now = Date.now();
  const batch = 10_000;
  const t0 = Date.now();
  for (let start = 0; start < n; start += batch) {
    const parts = [];
    for (let i = start; i < Math.min(n, start + batch); i++) parts.push(event(i, n, now));
    const r = await fetch(`${url}/api/v1/ingest`, { method: 'POST', body: parts.join('\n') + '\n',
      headers: { 'Idempotency-Key': `firstpaint-${start}` } });
    if (!r.ok) throw new Error(`ingest answered ${r.status}: ${await r.text()}`);
  }
  const acked = Date.now() - t0;
  for (;;) {
    const t = await total(url);
    if (t >= n) break;
    await sleep(500);
  }
  return { acked, searchable: Date.now() - t0 };
}

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };

// The search request the page makes first, timed from here (wall clock, median of RUNS).
async function apiMs(url, path) {
  const params = new URLSearchParams(path.slice(2));
  const u = new URL('/api/v1/search', url);
  u.searchParams.set('q', params.get('q') || '');
  u.searchParams.set('from', params.get('from'));
  u.searchParams.set('limit', '100');
  const times = [];
  for (let r = 0; r <= RUNS; r++) {
    const t0 = performance.now();
    const res = await fetch(u);
    await res.json();
    if (r) times.push(performance.now() - t0);
  }
  return median(times);
}

async function measure(context, url) {
  const out = [];
  for (const [name, path] of QUERIES) {
    const api = await apiMs(url, path);
    const first = [], fcp = [];
    for (let r = 0; r <= RUNS; r++) {
      const page = await context.newPage();
      await page.goto(url + path);
      const deadline = Date.now() + 60_000;
      let m;
      while (!(m = await page.evaluate(() => {
        const e = performance.getEntriesByName('spoor-first-results')[0];
        const p = performance.getEntriesByName('first-contentful-paint')[0];
        return e ? { first: e.startTime, fcp: p ? p.startTime : null, rows: document.querySelectorAll('#results .row').length } : null;
      }))) {
        if (Date.now() > deadline) throw new Error(`no results for ${path}`);
        await sleep(5);
      }
      await page.close();
      if (m.rows === 0) throw new Error(`no rows for ${path}`);
      if (r === 0) continue; // warm-up
      first.push(m.first);
      if (m.fcp !== null) fcp.push(m.fcp);
    }
    out.push({ name, api, first: median(first), min: Math.min(...first), max: Math.max(...first), fcp: median(fcp) });
  }
  return out;
}

const browser = await launch();
const results = {};
for (const n of [BASELINE, EVENTS]) {
  const c = await startCollector();
  try {
    const f = await fill(c.url, n);
    console.log(`${n.toLocaleString('en')} events: acknowledged in ${(f.acked / 1000).toFixed(1)} s, searchable after ${(f.searchable / 1000).toFixed(1)} s`);
    results[n] = await measure(browser.context, c.url);
    for (const q of results[n]) {
      console.log(`  ${q.name}: first results ${q.first.toFixed(0)} ms (min ${q.min.toFixed(0)}, max ${q.max.toFixed(0)}), first contentful paint ${q.fcp.toFixed(0)} ms; the search API alone ${q.api.toFixed(0)} ms`);
    }
  } finally {
    c.stop();
  }
}
await browser.close();
console.log(`\nmedian of ${RUNS} navigations, ms from navigation start to result rows on screen:`);
console.log(`| query | ${BASELINE.toLocaleString('en')} events | ${EVENTS.toLocaleString('en')} events | ratio |`);
console.log('|---|---|---|---|');
results[BASELINE].forEach((b, i) => {
  const big = results[EVENTS][i];
  console.log(`| ${b.name} | ${b.first.toFixed(0)} | ${big.first.toFixed(0)} | ${(big.first / b.first).toFixed(2)}x |`);
});
