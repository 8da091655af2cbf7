// Browser test of the collector's web UI, run by tests/e2e/ui.rs:
//   node ui.test.mjs <collector url> <screenshot dir>
// Drives Debian's chromium (/usr/bin/chromium) headless through playwright-core. The
// collector must already hold the corpus, the generated task runs and the XSS lines.
import { join } from 'node:path';
import { launch, waitUntil as waitUntilOn, checker } from './lib.mjs';
import assert from 'node:assert/strict';

const [base, shots] = process.argv.slice(2);
if (!base || !shots) {
  console.error('usage: node ui.test.mjs <collector url> <screenshot dir>');
  process.exit(2);
}

async function apiTotal(q, extra = {}) {
  const u = new URL('/api/v1/search', base);
  u.searchParams.set('q', q);
  u.searchParams.set('limit', '0');
  for (const [k, v] of Object.entries(extra)) u.searchParams.set(k, v);
  const r = await fetch(u);
  assert.equal(r.status, 200, `API search ${q}`);
  return (await r.json()).total;
}

const browser = await launch();
const t0 = Date.now();
const page = await browser.context.newPage();
page.setDefaultTimeout(15000);
const { check, failures, state } = checker(page, shots);
const pageErrors = [];
page.on('pageerror', (e) => pageErrors.push(`${state.step}: ${e.message}`));
page.on('response', (r) => { if (r.status() >= 400 && r.status() !== 400) console.log(`response ${r.status()} ${r.url()} (${state.step})`); });
page.on('requestfailed', (r) => console.log(`request failed ${r.url()} ${r.failure() && r.failure().errorText} (${state.step})`));
page.on('console', (m) => { if (m.type() === 'error') console.log(`console error (${state.step}): ${m.text()}`); });
const shot = (name) => page.screenshot({ path: join(shots, `${name}.png`) });
const total = async () => Number(await page.locator('#total').getAttribute('data-total'));
const waitUntil = (fn, arg, what) => waitUntilOn(page, fn, arg, what);
const waitTotal = async (n) => waitUntil((n) => {
  const t = document.getElementById('total');
  return t && Number(t.dataset.total) === n;
}, n, `total ${n}`);
const xssUnset = async () => assert.equal(await page.evaluate(() => typeof window.__xss), 'undefined', 'an XSS payload ran');

await check('the page is served with a strict CSP and loads', async () => {
  const resp = await page.goto(`${base}/?from=all`);
  assert.equal(resp.status(), 200);
  const csp = resp.headers()['content-security-policy'];
  assert.match(csp, /script-src 'self'/);
  assert.equal(resp.headers()['x-content-type-options'], 'nosniff');
  await page.waitForSelector('#total');
});

let all = 0;
await check('a search shows the right count', async () => {
  all = await apiTotal('');
  assert.ok(all > 16000, `the corpus is loaded (${all})`);
  await waitTotal(all);
  assert.equal(await page.locator('#results .row').count(), 100);
  const q = 'level:error';
  await page.fill('#q', q);
  await page.press('#q', 'Enter');
  const want = await apiTotal(q);
  await waitTotal(want);
  assert.ok(new URL(page.url()).searchParams.get('q') === q, 'the query is in the URL');
  // Newest first.
  const nanos = await page.$$eval('#results .row', (rows) => rows.length);
  assert.ok(nanos > 0);
});

await check('the histogram renders bars stacked by level', async () => {
  await page.goto(`${base}/?from=1h`);
  await page.waitForSelector('#histogram svg rect.bar');
  const bars = await page.locator('#histogram rect.bar').count();
  assert.ok(bars > 5, `bars: ${bars}`);
  assert.ok(await page.locator('#histogram rect.bar-error').count() > 0, 'error bars');
  assert.ok(await page.locator('#histogram rect.bar-info').count() > 0, 'info bars');
  await page.waitForSelector('#facets .facet');
  await shot('search');
});

await check('dragging across the histogram zooms the time range', async () => {
  await page.goto(`${base}/?q=task:charge&from=1h`);
  await page.waitForSelector('#facets .facet');
  await page.waitForSelector('#histogram svg rect.bar');
  await page.waitForTimeout(300); // the histogram redraws once the facets take their room
  const box = await page.locator('#histogram svg').boundingBox();
  const y = box.y + box.height / 2;
  await page.mouse.move(box.x + box.width * 0.8, y);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.98, y, { steps: 5 });
  await page.mouse.up();
  await waitUntil(() => new URL(location.href).searchParams.has('to'), null, 'a zoomed range in the URL');
  const u = new URL(page.url());
  const from = Date.parse(u.searchParams.get('from')), to = Date.parse(u.searchParams.get('to'));
  assert.ok(to > from && to - from < 30 * 60 * 1000, `${u.searchParams.get('from')} .. ${u.searchParams.get('to')}`);
  assert.equal(await page.locator('#range').inputValue(), 'custom');
  await waitTotal(await apiTotal('task:charge', { from: u.searchParams.get('from'), to: u.searchParams.get('to') }));
  await page.goBack();
  await waitUntil(() => !new URL(location.href).searchParams.has('to'), null, 'back to the preset');
  assert.equal(await page.locator('#range').inputValue(), '1h');
});

await check('clicking a facet narrows the search', async () => {
  await page.goto(`${base}/?from=1h`);
  await page.waitForSelector('#facets .facet');
  const before = await total();
  await page.locator('#facets .facet[data-field="task"][data-value="charge"]').click();
  const want = await apiTotal('task:charge', { from: '1h' });
  assert.ok(want < before && want > 0, `${want} < ${before}`);
  await waitTotal(want);
  assert.equal(new URL(page.url()).searchParams.get('q'), 'task:charge');
  await page.locator('#facets .facet[data-field="level"][data-value="error"]').click();
  const want2 = await apiTotal('task:charge level:error', { from: '1h' });
  await waitTotal(want2);
  assert.ok(want2 < want, `${want2} < ${want}`);
  const levels = await page.$$eval('#results .row .lvl', (ls) => [...new Set(ls.map((l) => l.textContent))]);
  assert.deepEqual(levels, ['error']);
  await shot('facet');
});

await check('expanding a row shows its fields; a value click adds a filter', async () => {
  await page.goto(`${base}/?q=task:parse_email&from=1h`);
  await page.waitForSelector('#results .row');
  await page.locator('#results .row .row-head').first().click();
  const body = page.locator('#results .row.open .row-body');
  await body.waitFor();
  const keys = await body.locator('td.k').allTextContents();
  for (const k of ['ts', 'level', 'msg', 'task', 'task_id', 'attempt', 'host', 'version', 'latency_ms', 'seq']) {
    assert.ok(keys.includes(k), `field ${k} in ${keys}`);
  }
  assert.match(await body.locator('pre.raw').textContent(), /^ts=\S+ level=\w+ msg="/);
  await shot('expanded');
  const host = await body.locator('tr', { has: page.locator('td.k', { hasText: /^host$/ }) }).locator('.fval').textContent();
  await body.locator('tr', { has: page.locator('td.k', { hasText: /^host$/ }) }).locator('.fval').click();
  await waitUntil((h) => new URL(location.href).searchParams.get('q') === `task:parse_email host:${h}`, host);
  await waitTotal(await apiTotal(`task:parse_email host:${host}`, { from: '1h' }));
  // Negation.
  await page.locator('#results .row .row-head').first().click();
  await page.locator('#results .row.open tr', { has: page.locator('td.k', { hasText: /^attempt$/ }) }).locator('button.mini').click();
  await waitUntil(() => /-attempt:\d/.test(new URL(location.href).searchParams.get('q')));
  await waitTotal(await apiTotal(`task:parse_email host:${host} -attempt:1`, { from: '1h' }));
});

await check('context view shows the lines around a hit from the same task run', async () => {
  await page.locator('#results .row .row-head').first().click();
  const taskId = await page.locator('#results .row.open tr', { has: page.locator('td.k', { hasText: /^task_id$/ }) }).locator('.fval').textContent();
  await page.locator('#results .row.open button.ctx').click();
  await page.waitForSelector('#view-context .row.anchor');
  const chips = await page.$$eval('#context-results .row', (rows) => rows.length);
  assert.ok(chips >= 2, `context rows: ${chips}`);
  const ids = await page.$$eval('#context-results .chip', (cs) => cs.filter((c) => c.title === 'task_id').map((c) => c.textContent));
  assert.ok(ids.every((t) => t === `task_id=${taskId}`), ids.join());
  await shot('context');
});

await check('task view summarises attempts and outcome', async () => {
  await page.goto(`${base}/?view=task&task_id=run-001`);
  await page.waitForSelector('#task-summary .card');
  const heads = await page.locator('#task-results .attempt-head').allTextContents();
  assert.equal(heads.length, 2, heads.join());
  assert.match(await page.locator('#task-summary').textContent(), /attempts2/);
  assert.equal(await page.locator('#task-results .row').count(), await apiTotal('task_id:run-001'));
  await shot('task');
});

await check('a bad query shows the error with a caret', async () => {
  await page.goto(`${base}/?from=1h`);
  await page.waitForSelector('#total');
  const bad = 'level:error AND (task:charge';
  await page.fill('#q', bad);
  await page.press('#q', 'Enter');
  await page.waitForSelector('#qerror:not([hidden])');
  assert.match(await page.locator('#qerror-msg').textContent(), /bad query/);
  const caret = await page.locator('#qerror-caret').textContent();
  const [line, mark] = caret.split('\n');
  assert.equal(line, bad);
  assert.match(mark, /^ *\^$/);
  const r = await fetch(`${base}/api/v1/search?q=${encodeURIComponent(bad)}`);
  assert.equal(mark.length, (await r.json()).column);
  await shot('error');
});

await check('pipeline queries show a table', async () => {
  await page.goto(`${base}/?q=${encodeURIComponent('* | count by task')}&from=1h`);
  await page.waitForSelector('#pipeline-table tbody tr');
  const cells = await page.locator('#pipeline-table tbody td').allTextContents();
  assert.ok(cells.includes('charge'), cells.join());
  // A bar per row beside the table.
  const rows = await page.locator('#pipeline-table tbody tr').count();
  assert.equal(await page.locator('#pipeline-table svg.hbar rect.pbar').count(), rows);
  await shot('pipeline');
});

await check('a timechart query draws one SVG line per series over every bucket', async () => {
  const q = 'task:charge | timechart 1m count by level';
  const u = new URL('/api/v1/search', base);
  u.searchParams.set('q', q);
  u.searchParams.set('from', '1h');
  const res = await (await fetch(u)).json();
  assert.deepEqual(res.columns, ['time', 'level', 'count']);
  const series = [...new Set(res.rows.map((r) => String(r[1])))].sort();
  const points = new Set(res.rows.map((r) => r[0])).size;
  assert.equal(series.length, 4, series.join());
  assert.ok(points >= 5, `buckets: ${points}`);
  await page.goto(`${base}/?q=${encodeURIComponent(q)}&from=1h`);
  await page.waitForSelector('#timechart svg path.series', { state: 'attached' });
  const drawn = await page.$$eval('#timechart svg path.series', (ps) => ps.map((p) => ({
    name: p.dataset.series, points: Number(p.dataset.points), segments: (p.getAttribute('d').match(/[ML]/g) || []).length })));
  assert.deepEqual(drawn.map((d) => d.name).sort(), series);
  for (const d of drawn) {
    assert.equal(d.points, points, d.name);
    assert.equal(d.segments, points, d.name);
  }
  assert.equal(await page.locator('#timechart svg circle.pt').count(), series.length * points);
  assert.deepEqual((await page.locator('#timechart .legend-item').allTextContents()).sort(), series);
  // The table is still there for exact numbers.
  assert.equal(await page.locator('#pipeline-table tbody tr').count(), res.rows.length);
  await shot('timechart');
});

await check('live tail shows a line sent after it was opened, and pauses', async () => {
  await page.goto(`${base}/?q=task:tail_probe&from=1h`);
  await page.waitForSelector('#total');
  await page.click('#tail-btn');
  await page.locator('#tail-btn[data-state="live"]').waitFor();
  const marker = `tail-probe-${Date.now()}`;
  const send = async (m) => {
    const r = await fetch(`${base}/api/v1/ingest`, { method: 'POST', body: `level=warn msg="${m}" task=tail_probe\n` });
    assert.equal(r.status, 200);
  };
  await send(marker);
  await page.locator('#results .row .msg', { hasText: marker }).waitFor();
  await shot('tail');
  await page.click('#pause-btn');
  await send(marker + '-later');
  await waitUntil(() => /Resume \(1\)/.test(document.getElementById('pause-btn').textContent));
  assert.equal(await page.locator('#results .row .msg', { hasText: marker + '-later' }).count(), 0);
  await page.click('#pause-btn');
  await page.locator('#results .row .msg', { hasText: marker + '-later' }).waitFor();
  await page.click('#tail-btn');
});

await check('XSS payloads are shown literally and never run', async () => {
  await page.goto(`${base}/?q=task:xss_probe&from=all`);
  await page.waitForSelector('#results .row');
  assert.equal(await page.locator('#results .row').count(), 4);
  for (const head of await page.locator('#results .row .row-head').all()) await head.click();
  await page.locator('#results .row .row-body').nth(3).waitFor();
  const msgs = await page.locator('#results .row .msg').allTextContents();
  for (const p of ['<script>window.__xss=1</script>', '<img src=x onerror="window.__xss=1">',
    'click <a href="javascript:window.__xss=1">here</a>', 'cell</td><td onmouseover=window.__xss=1>x']) {
    assert.ok(msgs.includes(p), `literal ${p} in ${JSON.stringify(msgs)}`);
  }
  assert.equal(await page.locator('#results script, #results img, #results a, #results i, #results b:not(.chip b)').count(), 0);
  assert.ok((await page.locator('#results td.k').allTextContents()).includes('<b>k</b>'));
  for (const c of await page.locator('#results td.v .fval').all()) await c.hover();
  // Facets and the plain-text line too.
  await page.locator('#facets .facet').first().waitFor();
  await page.fill('#q', 'script');
  await page.press('#q', 'Enter');
  await page.locator('#results .row .msg', { hasText: '<script>window.__xss=1</script> plain text line' }).waitFor();
  await page.locator('#results .row .row-head').first().click();
  await xssUnset();
  await page.goto(`${base}/?q=${encodeURIComponent('task:xss_probe | count by host')}&from=all`);
  await page.waitForSelector('#pipeline-table tbody tr');
  assert.ok((await page.locator('#pipeline-table td').allTextContents()).includes('<img src=x onerror=window.__xss=1>'));
  assert.equal(await page.locator('#pipeline img').count(), 0);
  await xssUnset();
  // Series names of a chart are log content too.
  await page.goto(`${base}/?q=${encodeURIComponent('task:xss_probe | timechart 1m count by host')}&from=all`);
  await page.waitForSelector('#timechart svg path.series', { state: 'attached' });
  assert.ok((await page.locator('#timechart .legend-item').allTextContents()).includes('<img src=x onerror=window.__xss=1>'));
  assert.equal(await page.locator('#pipeline img').count(), 0);
  await xssUnset();
  await page.goto(`${base}/?q=task:xss_probe&from=all`);
  await page.waitForSelector('#results .row');
  await page.locator('#results .row .row-head').first().click();
  await shot('xss');
  await xssUnset();
});

await check('dead letters and alerts pages render', async () => {
  await page.goto(`${base}/?view=dlq`);
  await waitUntil(() => !/Loading/.test(document.getElementById('dlq-msg').textContent));
  await shot('dlq');
  await page.goto(`${base}/?view=alerts`);
  await waitUntil(() => !/Loading/.test(document.getElementById('alerts-msg').textContent));
  await shot('alerts');
});

await check('no script errors on the page', async () => {
  assert.deepEqual(pageErrors, []);
});

await browser.close();
console.log(`${failures.length ? 'FAILED' : 'passed'} in ${Date.now() - t0} ms; screenshots in ${shots}`);
process.exit(failures.length ? 1 : 0);
