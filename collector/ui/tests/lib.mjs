// Shared by the browser tests and the first-paint benchmark: start Debian's chromium
// (/usr/bin/chromium, or $CHROMIUM) headless through playwright-core with a throwaway
// profile, and small helpers that work under the UI's strict CSP.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export async function launch() {
  const profile = mkdtempSync(join(tmpdir(), 'spoor-ui-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    viewport: { width: 1400, height: 900 },
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

// page.waitForFunction evaluates a string, which the page's CSP forbids: poll instead.
export async function waitUntil(page, fn, arg, what, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const last = await page.evaluate(fn, arg);
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what || fn}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// Runs named checks, logging each; collects the names of failures.
export function checker(page, shots) {
  const failures = [];
  const state = { step: '' };
  async function check(name, fn) {
    state.step = name;
    const start = Date.now();
    try {
      await fn();
      console.log(`ok   ${name} (${Date.now() - start} ms)`);
    } catch (e) {
      failures.push(name);
      console.log(`FAIL ${name}: ${e.stack || e}`);
      try { await page.screenshot({ path: join(shots, `FAIL-${name.replace(/\W+/g, '_')}.png`), fullPage: true }); } catch (_) { /* best effort */ }
    }
  }
  return { check, failures, state };
}
