// Browser test of the UI against a collector with tokens, alert rules and dead letters,
// run by tests/e2e/ui.rs:
//   SPOOR_UI_READ_TOKEN=.. SPOOR_UI_ADMIN_TOKEN=.. SPOOR_UI_INGEST_TOKEN=.. \
//   SPOOR_UI_DLQ_URL=.. node auth.test.mjs <collector url> <screenshot dir>
// The collector holds generated `task=charge` lines (errors among them), an alert rule
// `ui-errors` on them, and three dead letters (task_id dl-1, dl-2, dl-3).
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { launch, waitUntil as wait, checker } from './lib.mjs';

const [base, shots] = process.argv.slice(2);
const READ = process.env.SPOOR_UI_READ_TOKEN;
const ADMIN = process.env.SPOOR_UI_ADMIN_TOKEN;
const INGEST = process.env.SPOOR_UI_INGEST_TOKEN;
const DLQ_URL = process.env.SPOOR_UI_DLQ_URL;
if (!base || !shots || !READ || !ADMIN || !INGEST || !DLQ_URL) {
  console.error('usage: SPOOR_UI_{READ,ADMIN,INGEST}_TOKEN=.. SPOOR_UI_DLQ_URL=.. node auth.test.mjs <collector url> <screenshot dir>');
  process.exit(2);
}

async function apiGet(path, params, tok) {
  const u = new URL(path, base);
  for (const [k, v] of Object.entries(params || {})) u.searchParams.set(k, v);
  const r = await fetch(u, { headers: tok ? { Authorization: `Bearer ${tok}` } : {} });
  return { status: r.status, body: await r.json().catch(() => null) };
}
async function apiTotal(q, extra = {}) {
  const r = await apiGet('/api/v1/search', Object.assign({ q, limit: '0' }, extra), READ);
  assert.equal(r.status, 200, `API search ${q}`);
  return r.body.total;
}

const browser = await launch();
const page = await browser.context.newPage();
page.setDefaultTimeout(15000);
const { check, failures, state } = checker(page, shots);
const pageErrors = [];
page.on('pageerror', (e) => pageErrors.push(`${state.step}: ${e.message}`));
page.on('console', (m) => { if (m.type() === 'error' && !/status of 40[13]/.test(m.text())) console.log(`console error (${state.step}): ${m.text()}`); });
const shot = (name) => page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
const waitUntil = (fn, arg, what) => wait(page, fn, arg, what);
const waitTotal = (n) => waitUntil((n) => {
  const t = document.getElementById('total');
  return t && Number(t.dataset.total) === n;
}, n, `total ${n}`);
const xssUnset = async () => assert.equal(await page.evaluate(() => typeof window.__xss), 'undefined', 'an XSS payload ran');
async function enterToken(tok) {
  await page.locator('#token-form').waitFor();
  await page.fill('#token-input', tok);
  await page.press('#token-input', 'Enter');
}
const authKind = () => page.locator('#auth-msg').getAttribute('data-kind');

await check('without a token the UI asks for one', async () => {
  // The API refuses an anonymous caller, so this is the UI's doing, not a stale page.
  assert.equal((await apiGet('/api/v1/search', { q: '' })).status, 401);
  await page.goto(`${base}/?from=1h`);
  await page.locator('#token-form').waitFor();
  await page.locator('#auth-msg').waitFor();
  assert.equal(await authKind(), 'needed');
  assert.match(await page.locator('#auth-msg').textContent(), /requires a token/);
  await waitUntil(() => /Not authorised/.test(document.getElementById('summary').textContent), null, 'the summary says why');
  assert.equal(await page.locator('#results .row').count(), 0);
  await shot('auth-prompt');
});

await check('a wrong token shows an error and is not accepted', async () => {
  await enterToken('not-a-token');
  await waitUntil(() => document.getElementById('auth-msg').dataset.kind === 'rejected', null, 'a rejection');
  assert.match(await page.locator('#auth-msg').textContent(), /rejected \(unknown token\)/);
  assert.ok(await page.locator('#token-form').isVisible());
  assert.equal(await page.locator('#results .row').count(), 0);
  await shot('auth-wrong');
});

await check('after entering the read token, search works and the token is kept for the tab', async () => {
  await enterToken(READ);
  const want = await apiTotal('', { from: '1h' });
  assert.ok(want >= 300, `lines loaded: ${want}`);
  await waitTotal(want);
  assert.ok(await page.locator('#token-form').isHidden());
  assert.equal(await page.evaluate(() => sessionStorage.getItem('spoor.token')), READ);
  // The query goes with the token, and a reload does not ask again.
  await page.fill('#q', 'level:error');
  await page.press('#q', 'Enter');
  await waitTotal(await apiTotal('level:error', { from: '1h' }));
  await page.reload();
  await waitTotal(await apiTotal('level:error', { from: '1h' }));
  assert.ok(await page.locator('#token-form').isHidden());
  await page.locator('#facets .facet').first().waitFor();
  await page.locator('#histogram svg rect.bar').first().waitFor();
});

await check('live tail sends the token', async () => {
  await page.goto(`${base}/?q=task:tail_probe&from=1h`);
  await page.waitForSelector('#total');
  await page.click('#tail-btn');
  await page.locator('#tail-btn[data-state="live"]').waitFor();
  const marker = `auth-tail-${Date.now()}`;
  const r = await fetch(`${base}/api/v1/ingest`, { method: 'POST', headers: { Authorization: `Bearer ${INGEST}` },
    body: `level=warn msg="${marker}" task=tail_probe\n` });
  assert.equal(r.status, 200);
  await page.locator('#results .row .msg', { hasText: marker }).waitFor();
  await page.click('#tail-btn');
});

await check('the dead-letter page says the read token lacks the admin scope', async () => {
  await page.goto(`${base}/?view=dlq`);
  await waitUntil(() => /admin/.test(document.getElementById('dlq-msg').textContent), null, 'the scope message');
  assert.match(await page.locator('#dlq-msg').textContent(), /lacks the `admin` scope/);
  assert.equal(await authKind(), 'scope');
  assert.ok(await page.locator('#token-form').isVisible());
});

let dl2;
await check('with the admin token, a dry-run replay of one entry shows what would be sent', async () => {
  await enterToken(ADMIN);
  const listed = await apiGet('/api/v1/dlq', {}, ADMIN);
  assert.equal(listed.status, 200);
  assert.equal(listed.body.total, 3);
  await waitUntil(() => document.querySelectorAll('#dlq-table tbody tr').length === 3, null, '3 rows');
  // The first entry's error is an HTML payload: shown literally, never run.
  const dl1 = listed.body.entries.find((e) => e.task_id === 'dl-1');
  assert.match(dl1.error, /^<img src=x onerror=/);
  assert.equal(await page.locator(`#dlq-table tr[data-id="${dl1.id}"] .clip`).textContent(), dl1.error);
  assert.equal(await page.locator('#view-dlq img').count(), 0);
  await xssUnset();
  dl2 = listed.body.entries.find((e) => e.task_id === 'dl-2');
  const row = page.locator(`#dlq-table tr[data-id="${dl2.id}"]`);
  await row.locator('.dlq-dry').click();
  await page.locator('#dlq-dryrun .would-send').waitFor();
  assert.equal(await page.locator('#dlq-dryrun .would-send').count(), 1);
  assert.equal(await page.locator('#dlq-dryrun .dr-url').textContent(), DLQ_URL);
  assert.equal(await page.locator('#dlq-dryrun .dr-key').textContent(), 'dl-2');
  const sent = JSON.parse(await page.locator('#dlq-dryrun .dr-body').textContent());
  assert.equal(sent.task_id, 'dl-2');
  assert.equal(sent.task, 'charge');
  assert.equal(sent.payload_ref, 'payload-dl-2');
  assert.equal(sent.dlq_id, dl2.id);
  assert.match(await page.locator('#dlq-detail').textContent(), /nothing was sent/);
  // The same answer as the API's, and nothing changed.
  const api = await fetch(`${base}/api/v1/dlq/replay`, { method: 'POST',
    headers: { Authorization: `Bearer ${ADMIN}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ ids: [dl2.id], dry_run: true }) }).then((r) => r.json());
  assert.deepEqual(api.send[0].body, sent);
  const after = await apiGet(`/api/v1/dlq/${dl2.id}`, {}, ADMIN);
  assert.equal(after.body.state, 'pending');
  assert.equal(after.body.replays, 0);
  await shot('dlq-dry-run');
});

await check('discarding an entry takes two clicks and shows in the API', async () => {
  const dl3 = (await apiGet('/api/v1/dlq', {}, ADMIN)).body.entries.find((e) => e.task_id === 'dl-3');
  await page.locator(`#dlq-table tr[data-id="${dl3.id}"] .dlq-inspect`).click();
  await page.waitForSelector(`#dlq-detail[data-id="${dl3.id}"]`);
  await page.click('#dlq-detail .dlq-discard-btn');
  assert.equal((await apiGet(`/api/v1/dlq/${dl3.id}`, {}, ADMIN)).body.state, 'pending', 'one click does nothing');
  await page.click('#dlq-detail .dlq-discard-btn');
  await page.locator('#dlq-discarded').waitFor();
  const e = (await apiGet(`/api/v1/dlq/${dl3.id}`, {}, ADMIN)).body;
  assert.equal(e.state, 'discarded');
  assert.match(e.discarded_by, /^ops\b/);
  assert.equal(await page.locator(`#dlq-table tr[data-id="${dl3.id}"] .state`).textContent(), 'discarded');
});

await check('replaying an entry to an unreachable target shows the failure', async () => {
  const dl1 = (await apiGet('/api/v1/dlq', {}, ADMIN)).body.entries.find((e) => e.task_id === 'dl-1');
  await page.locator(`#dlq-table tr[data-id="${dl1.id}"] .dlq-inspect`).click();
  await page.waitForSelector(`#dlq-detail[data-id="${dl1.id}"]`);
  await page.click('#dlq-detail .dlq-replay-btn');
  await page.click('#dlq-detail .dlq-replay-btn');
  await page.locator('#dlq-replayed').waitFor();
  assert.match(await page.locator('#dlq-replayed').textContent(), /^Replay failed · entry is now failed/);
  const e = (await apiGet(`/api/v1/dlq/${dl1.id}`, {}, ADMIN)).body;
  assert.equal(e.state, 'failed');
  assert.equal(e.replays, 1);
  assert.equal(await page.locator(`#dlq-table tr[data-id="${dl1.id}"] .state`).textContent(), 'failed');
  await xssUnset();
});

await check('the alerts page shows the rule, its state and its history', async () => {
  await page.goto(`${base}/?view=alerts`);
  const rule = page.locator('#alert-rules tr.rule[data-rule="ui-errors"]');
  await rule.waitFor();
  assert.match(await rule.textContent(), /level:error task:charge/);
  // The evaluator runs every 200 ms; refresh until the rule fires.
  const deadline = Date.now() + 15000;
  while (await rule.locator('.state').textContent() !== 'firing') {
    assert.ok(Date.now() < deadline, 'the rule fires');
    await page.waitForTimeout(300);
    await page.click('#alerts-refresh');
    await rule.waitFor();
  }
  await page.locator('#alert-history-table tr.history-row').first().waitFor();
  const changes = await page.locator('#alert-history-table tr.history-row').allTextContents();
  assert.ok(changes.some((t) => /ui-errors/.test(t) && /→ ?firing/.test(t)), changes.join('\n'));
});

await check('a silence created through the UI is listed, is in the API, and can be expired', async () => {
  const comment = `<b>ui test</b> ${Date.now()}`;
  await page.selectOption('#silence-rule', 'ui-errors');
  await page.fill('#silence-matchers', 'team=payments');
  await page.fill('#silence-duration', '2h');
  await page.fill('#silence-comment', comment);
  await page.click('#silence-create');
  const row = page.locator('#silences tr.silence', { hasText: comment });
  await row.waitFor();
  assert.match(await row.textContent(), /alertname=ui-errors team=payments/);
  assert.equal(await page.locator('#silences b').count(), 0, 'the comment is text');
  const api = (await apiGet('/api/v1/alerts', {}, READ)).body;
  const s = api.silences.find((x) => x.comment === comment);
  assert.ok(s, JSON.stringify(api.silences));
  assert.deepEqual(s.matchers, { alertname: 'ui-errors', team: 'payments' });
  assert.equal(s.created_by, 'ops');
  const left = Date.parse(s.expires_at) - Date.now();
  assert.ok(left > 110 * 60e3 && left <= 120 * 60e3, `expires in ${left} ms`);
  await shot('auth-alerts-silence');
  await row.locator('.expire-btn').click();
  await row.locator('.expire-btn').click();
  await waitUntil((c) => ![...document.querySelectorAll('#silences tr')].some((r) => r.textContent.includes(c)), comment, 'the silence gone');
  assert.ok(!(await apiGet('/api/v1/alerts', {}, READ)).body.silences.some((x) => x.comment === comment));
});

await check('a read token cannot create a silence, and the page says why', async () => {
  await page.click('#token-btn');
  await enterToken(READ);
  await page.locator('#silence-form').waitFor();
  await page.selectOption('#silence-rule', 'ui-errors');
  await page.fill('#silence-comment', 'should not exist');
  await page.click('#silence-create');
  await waitUntil(() => /admin/.test(document.getElementById('silence-msg').textContent), null, 'the scope message');
  assert.match(await page.locator('#silence-msg').textContent(), /lacks the `admin` scope/);
  assert.ok(!(await apiGet('/api/v1/alerts', {}, READ)).body.silences.some((x) => x.comment === 'should not exist'));
});

await check('no script errors on the page', async () => {
  assert.deepEqual(pageErrors, []);
});

await browser.close();
console.log(`${failures.length ? 'FAILED' : 'passed'}; screenshots in ${shots}`);
process.exit(failures.length ? 1 : 0);
