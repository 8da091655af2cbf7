// spoor web UI: plain JS, no framework, no build step.
// Log content is attacker-controlled: every value reaches the page through textContent,
// createTextNode or attributes set with setAttribute on known-safe names; never as HTML markup.
'use strict';

(function () {
  const PRESETS = ['5m', '15m', '1h', '24h', '7d'];
  const DEFAULT_RANGE = '15m';
  const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'];
  const FACETS = ['level', 'task', 'host', 'version', 'kind'];
  const CHIP_KEYS = ['task', 'host', 'version', 'task_id', 'attempt', 'kind'];
  const RESERVED = ['ts', 'level', 'msg', 'task', 'task_id', 'attempt', 'depth', 'version',
    'host', 'pid', 'instance', 'kind'];
  const HIDDEN_KEYS = new Set(['_ts_nanos']);
  const ADDED_KEYS = new Set(['seq', 'ingest_ts', '_ts_nanos']);
  const PAGE = 100;
  const TAIL_MAX_ROWS = 2000;

  const $ = (id) => document.getElementById(id);

  // ---------- DOM helpers (text only) ----------
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === 'class') e.className = v;
        else if (k === 'text') e.textContent = v;
        else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
        else e.setAttribute(k, String(v));
      }
    }
    for (const c of children) append(e, c);
    return e;
  }
  function append(parent, ...cs) {
    for (const c of cs) {
      if (c === undefined || c === null || c === false) continue;
      if (Array.isArray(c)) { append(parent, ...c); continue; }
      parent.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  const SVG = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.setAttribute('class', v); else e.setAttribute(k, String(v));
    }
    return e;
  }
  function toast(text) {
    const t = $('toast');
    t.textContent = text;
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.hidden = true; }, 2500);
  }
  function str(v) {
    if (v === undefined || v === null) return '';
    return typeof v === 'string' ? v : (typeof v === 'object' ? JSON.stringify(v) : String(v));
  }

  // ---------- auth ----------
  const TOKEN_KEY = 'spoor.token';
  function token() { try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch (_) { return ''; } }
  function authHeaders() {
    const t = token();
    return t ? { Authorization: 'Bearer ' + t } : {};
  }
  // Shows the token form with why it is needed. `kind`: needed (no token sent), rejected
  // (the collector does not know the token), scope (known, but lacks the scope).
  function askToken(kind, text) {
    $('token-form').hidden = false;
    const m = $('auth-msg');
    m.textContent = text;
    m.dataset.kind = kind;
    m.hidden = false;
    if (document.activeElement !== $('token-input')) $('token-input').focus();
  }
  function authProblem(status, body) {
    const why = (body && body.error) || ('HTTP ' + status);
    if (status === 401 && !token()) {
      askToken('needed', 'This collector requires a token. Enter one with the read scope.');
    } else if (status === 401) {
      askToken('rejected', 'The token was rejected (' + why + '). Enter a valid token.');
      $('token-btn').textContent = 'Token ✗';
    } else {
      askToken('scope', 'Not allowed: ' + why + '. Enter a token with that scope to use this page.');
    }
  }
  function markToken() {
    $('token-btn').textContent = token() ? 'Token ✓' : 'Token';
  }

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.error) || ('HTTP ' + status));
      this.status = status;
      this.body = body || {};
    }
  }

  async function api(path, params, init) {
    const u = new URL(path, location.origin);
    for (const [k, v] of Object.entries(params || {})) {
      if (v !== undefined && v !== null && v !== '') u.searchParams.set(k, v);
    }
    const opts = Object.assign({}, init || {});
    opts.headers = Object.assign({ Accept: 'application/json' }, authHeaders(), opts.headers || {});
    const r = await fetch(u, opts);
    let body = null;
    try { body = await r.json(); } catch (_) { body = null; }
    if (r.status === 401 || r.status === 403) authProblem(r.status, body);
    if (!r.ok) throw new ApiError(r.status, body);
    return body;
  }

  // ---------- URL state ----------
  function readState() {
    const p = new URLSearchParams(location.search);
    return {
      view: p.get('view') || 'search',
      q: p.get('q') || '',
      from: p.has('from') ? p.get('from') : DEFAULT_RANGE,
      to: p.get('to') || '',
      seq: p.get('seq') || '',
      shard: p.get('shard') || '',
      task_id: p.get('task_id') || '',
    };
  }
  let state = readState();

  function stateUrl(s) {
    const p = new URLSearchParams();
    if (s.view && s.view !== 'search') p.set('view', s.view);
    if (s.view === 'context') p.set('seq', s.seq);
    if (s.view === 'context' && s.shard !== '' && s.shard !== undefined) p.set('shard', s.shard);
    if (s.view === 'task') p.set('task_id', s.task_id);
    if (s.q) p.set('q', s.q);
    if (s.from !== DEFAULT_RANGE || s.to) p.set('from', s.from);
    if (s.to) p.set('to', s.to);
    const qs = p.toString();
    return '/' + (qs ? '?' + qs : '');
  }
  function navigate(patch, replace) {
    state = Object.assign({}, state, patch);
    const url = stateUrl(state);
    if (url !== location.pathname + location.search) {
      if (replace) history.replaceState(null, '', url); else history.pushState(null, '', url);
    }
    render();
  }
  window.addEventListener('popstate', () => { state = readState(); render(); });

  // API time parameters for the current range ('all' sends none).
  function rangeParams() {
    if (state.from === 'all') return { to: state.to || undefined };
    return { from: state.from || undefined, to: state.to || undefined };
  }

  // ---------- formatting ----------
  function pad(n, w) { return String(n).padStart(w || 2, '0'); }
  function fmtLocal(ms, withDate) {
    const d = new Date(ms);
    const t = pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds()) +
      '.' + pad(d.getMilliseconds(), 3);
    if (!withDate) return t;
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' + t;
  }
  function hitMillis(hit) {
    if (hit._ts_nanos !== undefined) return Number(BigInt(String(hit._ts_nanos)) / 1000000n);
    const ms = Date.parse(hit.ts);
    return Number.isNaN(ms) ? null : ms;
  }
  // The timestamp with all nine digits, for the tooltip.
  function fullTs(hit) {
    let utc = hit.ts || '';
    if (hit._ts_nanos !== undefined) {
      const n = BigInt(String(hit._ts_nanos));
      const ms = Number(n / 1000000n);
      const frac = ((n % 1000000000n) + 1000000000n) % 1000000000n;
      utc = new Date(ms).toISOString().slice(0, 19) + '.' + String(frac).padStart(9, '0') + 'Z';
    }
    return 'UTC ' + utc + (hit.ts && hit.ts !== utc ? '\nas sent ' + hit.ts : '') +
      (hit.seq ? '\nseq ' + hit.seq : '');
  }
  function levelClass(level) {
    const l = String(level || '').toLowerCase();
    return LEVELS.includes(l) ? l : 'other';
  }

  // logfmt encoding of a hit (the line as stored, minus what the collector added).
  function logfmtValue(v) {
    if (v === '') return '""';
    if (!/[\s="\\\u0000-\u001f\u007f]/.test(v)) return v;
    let out = '"';
    for (const ch of v) {
      const c = ch.codePointAt(0);
      if (ch === '"') out += '\\"';
      else if (ch === '\\') out += '\\\\';
      else if (ch === '\n') out += '\\n';
      else if (ch === '\r') out += '\\r';
      else if (ch === '\t') out += '\\t';
      else if (c < 0x20 || c === 0x7f) out += '\\u' + c.toString(16).padStart(4, '0');
      else out += ch;
    }
    return out + '"';
  }
  function orderedKeys(hit) {
    const keys = Object.keys(hit).filter((k) => !HIDDEN_KEYS.has(k));
    const rest = keys.filter((k) => !RESERVED.includes(k)).sort();
    return RESERVED.filter((k) => k in hit).concat(rest);
  }
  function rawLine(hit) {
    return orderedKeys(hit).filter((k) => !ADDED_KEYS.has(k))
      .map((k) => k + '=' + logfmtValue(str(hit[k]))).join(' ');
  }

  // ---------- query editing ----------
  // Splits at the first `|` outside quotes: [filter, pipeline-or-''].
  function splitPipeline(q) {
    let inQ = false;
    for (let i = 0; i < q.length; i++) {
      const c = q[i];
      if (c === '\\' && inQ) { i++; continue; }
      if (c === '"') inQ = !inQ;
      else if (c === '|' && !inQ) return [q.slice(0, i), q.slice(i)];
    }
    return [q, ''];
  }
  function quoteValue(v) {
    if (/^[A-Za-z0-9_.@-]+$/.test(v)) return v;
    return '"' + v.replace(/\\/g, '\\\\').replace(/"/g, '\\"') + '"';
  }
  function addFilter(key, value, negate) {
    const term = (negate ? '-' : '') + key + ':' + quoteValue(String(value));
    const [filter, pipe] = splitPipeline(state.q);
    const f = filter.trim();
    const q = (f && f !== '*' ? f + ' ' : '') + term + (pipe ? ' ' + pipe.trim() : '');
    $('q').value = q;
    navigate({ view: 'search', q });
  }

  // ---------- views ----------
  const VIEWS = ['search', 'context', 'task', 'dlq', 'alerts'];
  function render() {
    for (const v of VIEWS) $('view-' + v).hidden = v !== state.view;
    for (const a of document.querySelectorAll('.top nav a')) {
      const active = a.dataset.view === state.view ||
        (a.dataset.view === 'search' && (state.view === 'context' || state.view === 'task'));
      a.classList.toggle('active', active);
    }
    if (state.view !== 'search') stopTail();
    if (state.view === 'search') renderSearch();
    else if (state.view === 'context') renderContext();
    else if (state.view === 'task') renderTask();
    else if (state.view === 'dlq') renderDlq();
    else if (state.view === 'alerts') renderAlerts();
  }

  // ---------- search view ----------
  let generation = 0;
  let limit = PAGE;
  let lastHits = [];

  function syncForm() {
    if (document.activeElement !== $('q')) $('q').value = state.q;
    const preset = state.from === 'all' && !state.to ? 'all'
      : (PRESETS.includes(state.from) && !state.to ? state.from : 'custom');
    $('range').value = preset;
    $('custom-range').hidden = preset !== 'custom';
    if (preset === 'custom') { $('from').value = state.from; $('to').value = state.to; }
  }

  function showQueryError(err, q) {
    $('q').classList.add('bad');
    $('qerror').hidden = false;
    $('qerror-msg').textContent = err.message;
    const pre = $('qerror-caret');
    clear(pre);
    const col = err.body && (err.body.column || (err.body.position !== undefined ? err.body.position + 1 : 0));
    if (col) {
      append(pre, q + '\n');
      append(pre, el('span', { class: 'caret', text: ' '.repeat(Math.max(0, col - 1)) + '^' }));
    }
  }
  function clearQueryError() {
    $('q').classList.remove('bad');
    $('qerror').hidden = true;
  }

  async function renderSearch() {
    syncForm();
    const gen = ++generation;
    const q = state.q;
    const [filter, pipe] = splitPipeline(q);
    const rp = rangeParams();
    $('summary').textContent = 'Searching…';
    const searchP = api('/api/v1/search', Object.assign({ q, limit }, rp));
    const histP = api('/api/v1/histogram', Object.assign({ q: filter, buckets: 80 }, rp));
    const fieldsP = api('/api/v1/fields', Object.assign({ q: filter }, rp));
    // Handled below once the search answers; mark them handled now so an early failure
    // is not reported as an unhandled rejection.
    histP.catch(() => {});
    fieldsP.catch(() => {});
    let res;
    try {
      res = await searchP;
    } catch (e) {
      if (gen !== generation) return;
      $('summary').textContent = '';
      if (e.status === 400) showQueryError(e, q);
      else {
        clearQueryError();
        $('summary').textContent = (e.status === 401 || e.status === 403 ? 'Not authorised: ' : 'Search failed: ') + e.message;
      }
      clear($('results')); clear($('histogram')); clear($('facets'));
      $('pipeline').hidden = true; $('more-btn').hidden = true;
      return;
    }
    if (gen !== generation) return;
    clearQueryError();
    renderSummary(res, pipe);
    if (res.columns) {
      renderPipeline(res);
      clear($('results'));
      $('more-btn').hidden = true;
    } else {
      $('pipeline').hidden = true;
      lastHits = res.hits || [];
      renderRows($('results'), lastHits);
      markFirstResults();
      $('more-btn').hidden = lastHits.length >= res.total || lastHits.length < limit;
    }
    histP.then((h) => { if (gen === generation) renderHistogram(h); })
      .catch(() => { if (gen === generation) clear($('histogram')); });
    fieldsP.then((f) => { if (gen === generation) renderFacets(f.fields || {}); })
      .catch(() => { if (gen === generation) clear($('facets')); });
  }

  function renderSummary(res, pipe) {
    const s = $('summary');
    clear(s);
    if (res.columns) {
      append(s, el('strong', { id: 'total', 'data-total': (res.rows || []).length,
        text: (res.rows || []).length.toLocaleString() }), ' rows');
    } else {
      append(s, el('strong', { id: 'total', 'data-total': res.total, text: Number(res.total).toLocaleString() }),
        res.total === 1 ? ' hit' : ' hits');
    }
    append(s, ' · ', String(res.took_ms), ' ms · ', rangeLabel());
    if (tail.on) append(s, el('span', { class: 'tailing', text: tail.paused ? ' · tail paused' : ' · live' }));
  }
  function rangeLabel() {
    if (state.from === 'all' && !state.to) return 'all time';
    if (PRESETS.includes(state.from) && !state.to) return 'last ' + state.from;
    return (state.from || 'start') + ' → ' + (state.to || 'now');
  }

  // The first time results are on the page, as a User Timing mark (read by the first-paint
  // benchmark, collector/ui/tests/firstpaint.mjs).
  function markFirstResults() {
    if (markFirstResults.done) return;
    markFirstResults.done = true;
    // After the frame holding the rows: rAF runs before that paint, the timeout after it.
    requestAnimationFrame(() => setTimeout(() => performance.mark('spoor-first-results'), 0));
  }

  // ----- rows -----
  function renderRows(container, hits, opts) {
    clear(container);
    const frag = document.createDocumentFragment();
    for (const h of hits) frag.appendChild(row(h, opts));
    container.appendChild(frag);
  }

  function row(hit, opts) {
    const level = hit.level || '';
    const ms = hitMillis(hit);
    const r = el('div', { class: 'row' + (opts && opts.anchor && opts.anchor === hit.seq ? ' anchor' : ''),
      'data-seq': hit.seq || '' });
    const chips = el('span', { class: 'chips' });
    for (const k of CHIP_KEYS) {
      if (hit[k] === undefined || (k === 'kind' && hit[k] === 'log')) continue;
      if (k === 'attempt' && hit[k] === '1') continue;
      chips.appendChild(el('span', { class: 'chip', title: k }, k + '=', el('b', { text: str(hit[k]) })));
    }
    const head = el('div', { class: 'row-head', role: 'button', tabindex: '0' },
      el('span', { class: 'ts', title: fullTs(hit), text: ms === null ? '' : fmtLocal(ms, true) }),
      el('span', { class: 'lvl lvl-' + levelClass(level), text: level || '—' }),
      el('span', { class: 'msg', text: str(hit.msg) }),
      chips);
    const toggle = () => {
      if (r.classList.toggle('open')) r.appendChild(rowBody(hit));
      else if (r.lastChild && r.lastChild.classList.contains('row-body')) r.removeChild(r.lastChild);
    };
    head.addEventListener('click', (ev) => { if (!getSelection().toString()) toggle(); ev.stopPropagation(); });
    head.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); toggle(); } });
    r.appendChild(head);
    return r;
  }

  function rowBody(hit) {
    const tbody = el('tbody');
    for (const k of orderedKeys(hit)) {
      const v = str(hit[k]);
      tbody.appendChild(el('tr', null,
        el('td', { class: 'k', text: k }),
        el('td', { class: 'v' }, el('button', { type: 'button', class: 'fval', title: 'Filter: ' + k + ':' + v,
          onclick: () => addFilter(k, v, false), text: v })),
        el('td', { class: 'act' },
          el('button', { type: 'button', class: 'mini', title: 'Exclude ' + k + ':' + v, 'aria-label': 'Exclude',
            onclick: () => addFilter(k, v, true), text: '−' }))));
    }
    const raw = rawLine(hit);
    const actions = el('div', { class: 'row-actions' },
      el('button', { type: 'button', class: 'ghost mini copy', onclick: () => copy(raw), text: 'Copy line' }),
      hit.seq ? el('button', { type: 'button', class: 'ghost mini ctx',
        onclick: () => navigate({ view: 'context', seq: hit.seq, shard: hit.shard === undefined ? '' : String(hit.shard) }), text: 'Context' }) : null,
      hit.task_id ? el('button', { type: 'button', class: 'ghost mini taskv',
        onclick: () => navigate({ view: 'task', task_id: hit.task_id }), text: 'Task run' }) : null);
    return el('div', { class: 'row-body' },
      el('table', { class: 'fields' }, tbody),
      el('pre', { class: 'raw', title: 'The line as logfmt', text: raw }),
      actions);
  }

  async function copy(text) {
    try { await navigator.clipboard.writeText(text); toast('Copied'); } catch (_) {
      const ta = el('textarea'); ta.value = text; document.body.appendChild(ta); ta.select();
      try { document.execCommand('copy'); toast('Copied'); } catch (_e) { toast('Copy failed'); }
      ta.remove();
    }
  }

  // ----- histogram -----
  let histo = null;
  function renderHistogram(h) {
    const box = $('histogram');
    clear(box);
    histo = h;
    const buckets = (h && h.buckets) || [];
    if (!buckets.length) return;
    // Measure the column, not the box: an empty box is not displayed.
    const W = Math.max(200, box.parentElement.clientWidth - 2), H = 108;
    const top = 6, bottom = 16, left = 4, right = 4;
    const ih = H - top - bottom, iw = W - left - right;
    const max = Math.max(1, ...buckets.map((b) => b.count));
    const interval = Math.max(1, h.interval_ms || 1);
    // The axis spans the requested range (the API only returns buckets around data).
    const [r0, r1] = rangeMs();
    const t0 = Math.min(r0 === null ? Infinity : r0, buckets[0].time_ms);
    const t1 = Math.max(r1, buckets[buckets.length - 1].time_ms + interval);
    const xAt = (t) => left + ((t - t0) / Math.max(1, t1 - t0)) * iw;
    const bw = Math.max(1, (interval / Math.max(1, t1 - t0)) * iw);
    const s = svg('svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img' });
    buckets.forEach((b) => {
      const x = xAt(b.time_ms);
      let y = top + ih;
      const levels = Object.assign({}, b.levels || {});
      const order = LEVELS.filter((l) => l in levels).concat(Object.keys(levels).filter((l) => !LEVELS.includes(l)));
      let counted = 0;
      const g = svg('g', { class: 'bucket' });
      const t = svg('title');
      t.textContent = fmtLocal(b.time_ms, true) + ' — ' + b.count + ' hits' +
        order.map((l) => '\n' + l + ': ' + levels[l]).join('');
      g.appendChild(t);
      const stack = order.map((l) => [l, Number(levels[l]) || 0]);
      for (const [, n] of stack) counted += n;
      if (b.count > counted) stack.push(['other', b.count - counted]);
      for (const [l, n] of stack) {
        if (!n) continue;
        const hgt = (n / max) * ih;
        y -= hgt;
        g.appendChild(svg('rect', { class: 'bar bar-' + levelClass(l), x: x + 0.5, y, width: Math.max(1, bw - 1), height: hgt }));
      }
      s.appendChild(g);
    });
    const labels = 6;
    for (let i = 0; i < labels; i++) {
      const t = t0 + ((t1 - t0) * i) / (labels - 1);
      const tx = svg('text', { class: 'axis', x: xAt(t), y: H - 4,
        'text-anchor': i === 0 ? 'start' : (i === labels - 1 ? 'end' : 'middle') });
      tx.textContent = fmtLocal(t, t1 - t0 > 86400000).replace(/\.\d+$/, '');
      s.appendChild(tx);
    }
    const sel = svg('rect', { class: 'sel', x: 0, y: 0, width: 0, height: H, visibility: 'hidden' });
    s.appendChild(sel);
    box.appendChild(s);
    box.dataset.buckets = String(buckets.length);
    bindZoom(box, s, sel, { left, iw, W, t0, t1, buckets, interval });
  }

  function bindZoom(box, s, sel, g) {
    let startX = null;
    // Pointer position in the SVG's own units (it may be drawn scaled).
    const xOf = (ev) => {
      const r = s.getBoundingClientRect();
      return (ev.clientX - r.left) * (g.W / Math.max(1, r.width));
    };
    const timeAt = (x) => {
      const frac = Math.min(1, Math.max(0, (x - g.left) / g.iw));
      return g.t0 + frac * (g.t1 - g.t0);
    };
    s.addEventListener('mousedown', (ev) => { startX = xOf(ev); ev.preventDefault(); });
    s.addEventListener('mousemove', (ev) => {
      if (startX === null) return;
      const x = xOf(ev);
      sel.setAttribute('x', Math.min(x, startX));
      sel.setAttribute('width', Math.abs(x - startX));
      sel.setAttribute('visibility', 'visible');
    });
    const finish = (ev) => {
      if (startX === null) return;
      const x = xOf(ev);
      let a = timeAt(Math.min(x, startX)), b = timeAt(Math.max(x, startX));
      if (Math.abs(x - startX) < 4) {
        // A click zooms to the bucket under the pointer.
        const t = timeAt(x);
        const hit = g.buckets.find((bk) => bk.time_ms <= t && t < bk.time_ms + g.interval);
        if (hit) { a = hit.time_ms; b = a + g.interval; } else { startX = null; return; }
      }
      startX = null;
      sel.setAttribute('visibility', 'hidden');
      navigate({ from: new Date(Math.floor(a)).toISOString(), to: new Date(Math.ceil(b)).toISOString() });
    };
    s.addEventListener('mouseup', finish);
    s.addEventListener('mouseleave', () => { startX = null; sel.setAttribute('visibility', 'hidden'); });
  }
  // Redraw when the box changes width (window resize, facets appearing).
  let drawnWidth = 0;
  let resizeTimer;
  new ResizeObserver(() => {
    const w = $('histogram').parentElement.clientWidth;
    if (!w || w === drawnWidth) return;
    drawnWidth = w;
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { if (histo && state.view === 'search') renderHistogram(histo); }, 50);
  }).observe($('histogram').parentElement);

  // The current range in epoch milliseconds: [from or null for "all", to].
  function parseBound(text, now) {
    if (!text || text === 'now') return now;
    const m = /^(\d+)\s*(ms|s|m|h|d|w)$/.exec(text.trim());
    if (m) return now - Number(m[1]) * { ms: 1, s: 1e3, m: 6e4, h: 36e5, d: 864e5, w: 6048e5 }[m[2]];
    if (/^\d+$/.test(text)) return Number(text) * (text.length > 11 ? 1 : 1000);
    const t = Date.parse(text);
    return Number.isNaN(t) ? null : t;
  }
  function rangeMs() {
    const now = Date.now();
    const to = parseBound(state.to, now) || now;
    const from = state.from === 'all' ? null : parseBound(state.from, now);
    return [from, to];
  }

  // ----- facets -----
  function renderFacets(fields) {
    const box = $('facets');
    clear(box);
    const names = FACETS.concat(Object.keys(fields).filter((k) => !FACETS.includes(k)).sort());
    for (const name of names) {
      const values = fields[name];
      box.appendChild(el('h3', { text: name }));
      if (!values || !values.length) { box.appendChild(el('div', { class: 'facet-empty', text: '—' })); continue; }
      for (const { value, count } of values) {
        const b = el('button', { type: 'button', class: 'facet', 'data-field': name, 'data-value': str(value),
          title: 'Click: only ' + name + ':' + str(value) + '\nShift-click: exclude it' },
        el('span', { class: 'fv', text: str(value) }),
        el('span', { class: 'fc', text: Number(count).toLocaleString() }));
        b.addEventListener('click', (ev) => addFilter(name, str(value), ev.shiftKey));
        box.appendChild(b);
      }
    }
  }

  // ----- pipeline results -----
  // `timechart` answers columns [time, (by), count]: drawn as a line per series. Other
  // pipelines (`count by`, `top`) are a table with a bar per row when the last column is a
  // number. Everything is built with createElementNS/createElement and textContent.
  function renderPipeline(res) {
    const box = $('pipeline');
    clear(box);
    box.hidden = false;
    clear($('histogram'));
    const cols = res.columns || [];
    const rows = res.rows || [];
    const isTimechart = cols[0] === 'time' && cols[cols.length - 1] === 'count' &&
      (cols.length === 2 || cols.length === 3) && rows.every((r) => !Number.isNaN(Date.parse(str(r[0]))));
    if (isTimechart && rows.length) box.appendChild(timechart(cols, rows));
    const numeric = rows.length > 0 && rows.every((r) => r.length && r[r.length - 1] !== null &&
      r[r.length - 1] !== '' && !Number.isNaN(Number(r[r.length - 1])));
    const withBars = numeric && !isTimechart;
    const max = withBars ? Math.max(1, ...rows.map((r) => Number(r[r.length - 1]))) : 1;
    const thead = el('tr', null, cols.map((c) => el('th', { text: c })), withBars ? el('th', { class: 'barcol' }) : null);
    const tbody = el('tbody');
    for (const r of rows) {
      const tr = el('tr', null, r.map((v) => el('td', {
        class: typeof v === 'number' || (/^-?\d+(\.\d+)?$/.test(str(v))) ? 'num' : null, text: str(v) })));
      if (withBars) {
        const W = 200, H = 12;
        const b = svg('svg', { class: 'hbar', width: W, height: H, viewBox: `0 0 ${W} ${H}`, 'aria-hidden': 'true' });
        b.appendChild(svg('rect', { class: 'pbar', x: 0, y: 1, height: H - 2,
          width: Math.max(1, (Number(r[r.length - 1]) / max) * W) }));
        tr.appendChild(el('td', { class: 'barcell' }, b));
      }
      tbody.appendChild(tr);
    }
    box.appendChild(el('table', { class: 'grid', id: 'pipeline-table' }, el('thead', null, thead), tbody));
  }

  const SERIES_COLOURS = 10;
  function timechart(cols, rows) {
    const by = cols.length === 3;
    const times = [...new Set(rows.map((r) => Date.parse(str(r[0]))))].sort((a, b) => a - b);
    const seriesNames = [];
    const values = new Map(); // series -> Map(time -> count)
    for (const r of rows) {
      const name = by ? str(r[1]) : 'count';
      if (!values.has(name)) { values.set(name, new Map()); seriesNames.push(name); }
      const t = Date.parse(str(r[0]));
      const m = values.get(name);
      m.set(t, (m.get(t) || 0) + (Number(r[r.length - 1]) || 0));
    }
    // Level series take their level's colour; others a palette slot by order.
    const cls = (name, i) => (by && cols[1] === 'level' && LEVELS.includes(name.toLowerCase()))
      ? 'ser-' + name.toLowerCase() : 'ser-c' + (i % SERIES_COLOURS);
    const W = 900, H = 220, left = 48, right = 10, top = 10, bottom = 22;
    const iw = W - left - right, ih = H - top - bottom;
    const t0 = times[0], t1 = times[times.length - 1];
    let max = 1;
    for (const m of values.values()) for (const v of m.values()) max = Math.max(max, v);
    const xAt = (t) => left + (t1 === t0 ? iw / 2 : ((t - t0) / (t1 - t0)) * iw);
    const yAt = (v) => top + ih - (v / max) * ih;
    const s = svg('svg', { class: 'timechart', viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none',
      role: 'img', 'data-series': seriesNames.length, 'data-points': times.length });
    // Grid and axes.
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4, y = yAt(v);
      s.appendChild(svg('line', { class: 'grid-line', x1: left, x2: W - right, y1: y, y2: y }));
      const tx = svg('text', { class: 'axis', x: left - 4, y: y + 3, 'text-anchor': 'end' });
      tx.textContent = Number.isInteger(v) ? String(v) : v.toFixed(1);
      s.appendChild(tx);
    }
    const nLabels = Math.min(times.length, 6);
    const span = t1 - t0;
    for (let i = 0; i < nLabels; i++) {
      const t = nLabels === 1 ? t0 : t0 + (span * i) / (nLabels - 1);
      const tx = svg('text', { class: 'axis', x: xAt(t), y: H - 6,
        'text-anchor': nLabels === 1 ? 'middle' : (i === 0 ? 'start' : (i === nLabels - 1 ? 'end' : 'middle')) });
      tx.textContent = fmtLocal(t, span > 86400000).replace(/\.\d+$/, '');
      s.appendChild(tx);
    }
    // One path per series over every time bucket (a bucket with no row counts 0).
    const dots = times.length * seriesNames.length <= 2000;
    seriesNames.forEach((name, i) => {
      const m = values.get(name);
      const g = svg('g', { class: 'series-group' });
      const d = times.map((t, j) => (j ? 'L' : 'M') + xAt(t).toFixed(1) + ' ' + yAt(m.get(t) || 0).toFixed(1)).join(' ');
      const path = svg('path', { class: 'series ' + cls(name, i), d, 'data-series': name, 'data-points': times.length });
      const title = svg('title'); title.textContent = name;
      path.appendChild(title);
      g.appendChild(path);
      if (dots) {
        for (const t of times) {
          const c = svg('circle', { class: 'pt ' + cls(name, i), cx: xAt(t), cy: yAt(m.get(t) || 0), r: 2.5 });
          const tt = svg('title');
          tt.textContent = fmtLocal(t, true) + '\n' + name + ': ' + (m.get(t) || 0);
          c.appendChild(tt);
          g.appendChild(c);
        }
      }
      s.appendChild(g);
    });
    const legend = el('div', { class: 'legend' }, seriesNames.map((name, i) =>
      el('span', { class: 'legend-item' }, el('span', { class: 'sw ' + cls(name, i) }), el('span', { text: name }))));
    return el('div', { class: 'pchart', id: 'timechart' }, s, legend);
  }

  // ----- live tail -----
  const tail = { on: false, paused: false, ctrl: null, buffer: [] };
  function startTail() {
    stopTail();
    const ctrl = new AbortController();
    Object.assign(tail, { on: true, paused: false, ctrl, buffer: [] });
    $('tail-btn').setAttribute('aria-pressed', 'true');
    $('tail-btn').textContent = 'Stop tail';
    $('pause-btn').hidden = false;
    $('pause-btn').textContent = 'Pause';
    const u = new URL('/api/v1/tail', location.origin);
    if (state.q) u.searchParams.set('q', splitPipeline(state.q)[0]);
    fetch(u, { headers: Object.assign({ Accept: 'text/event-stream' }, authHeaders()), signal: ctrl.signal })
      .then(async (r) => {
        if (!r.ok) {
          let body = null; try { body = await r.json(); } catch (_) { /* not JSON */ }
          if (r.status === 401 || r.status === 403) authProblem(r.status, body);
          throw new ApiError(r.status, body);
        }
        // The server picks the starting point when it answers: from here on nothing is missed.
        for (const t of document.querySelectorAll('.tailing')) { t.textContent = ' · live'; t.dataset.state = 'live'; }
        $('tail-btn').dataset.state = 'live';
        const reader = r.body.getReader();
        const dec = new TextDecoder();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += dec.decode(value, { stream: true }).replace(/\r\n/g, '\n');
          let i;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const chunk = buf.slice(0, i);
            buf = buf.slice(i + 2);
            const data = chunk.split('\n').filter((l) => l.startsWith('data:'))
              .map((l) => l.slice(5).replace(/^ /, '')).join('\n');
            if (!data) continue;
            try { tailHit(JSON.parse(data)); } catch (_) { /* ignore a malformed event */ }
          }
        }
        if (tail.ctrl === ctrl) { stopTail(); toast('Live tail ended'); }
      })
      .catch((e) => {
        if (e.name === 'AbortError') return;
        if (tail.ctrl === ctrl) stopTail();
        if (e.status === 400) showQueryError(e, state.q); else toast('Live tail failed: ' + e.message);
      });
    $('summary').appendChild(el('span', { class: 'tailing', text: ' · connecting…' }));
  }
  function tailHit(hit) {
    if (tail.paused) { tail.buffer.push(hit); $('pause-btn').textContent = 'Resume (' + tail.buffer.length + ')'; return; }
    const box = $('results');
    const r = row(hit);
    r.classList.add('new');
    box.insertBefore(r, box.firstChild);
    while (box.childNodes.length > TAIL_MAX_ROWS) box.removeChild(box.lastChild);
    const t = $('total');
    if (t && $('pipeline').hidden) {
      const n = Number(t.dataset.total || 0) + 1;
      t.dataset.total = String(n);
      t.textContent = n.toLocaleString();
    }
  }
  function stopTail() {
    if (tail.ctrl) tail.ctrl.abort();
    Object.assign(tail, { on: false, paused: false, ctrl: null, buffer: [] });
    $('tail-btn').setAttribute('aria-pressed', 'false');
    delete $('tail-btn').dataset.state;
    $('tail-btn').textContent = 'Live tail';
    $('pause-btn').hidden = true;
    for (const s of document.querySelectorAll('.tailing')) s.remove();
  }
  function togglePause() {
    if (!tail.on) return;
    tail.paused = !tail.paused;
    if (!tail.paused) {
      const pending = tail.buffer; tail.buffer = [];
      pending.forEach(tailHit);
      $('pause-btn').textContent = 'Pause';
    } else {
      $('pause-btn').textContent = 'Resume';
    }
  }

  // ---------- context view ----------
  async function renderContext() {
    const box = $('context-results');
    clear(box);
    $('context-title').textContent = 'Context of line ' + state.seq;
    try {
      // Cluster mode: a hit's seq is a position in its shard, and the shard goes along.
      const res = await api('/api/v1/context', { seq: state.seq, shard: state.shard, before: 50, after: 50 });
      const hits = res.hits || [];
      const scope = hits.find((h) => h.seq === state.seq);
      if (scope) {
        $('context-title').textContent = 'Context of line ' + state.seq +
          (scope.task_id ? ' (task run ' + scope.task_id + ')' : (scope.host ? ' (host ' + scope.host + ')' : ''));
      }
      renderRows(box, hits, { anchor: state.seq });
      const a = box.querySelector('.row.anchor');
      if (a) a.scrollIntoView({ block: 'center' });
    } catch (e) {
      box.appendChild(el('div', { class: 'note err', text: 'Context failed: ' + e.message }));
    }
  }

  // ---------- task view ----------
  async function renderTask() {
    const box = $('task-results');
    const sum = $('task-summary');
    clear(box); clear(sum);
    $('task-title').textContent = 'Task run ' + state.task_id;
    let res;
    try {
      res = await api('/api/v1/search', { q: 'task_id:' + quoteValue(state.task_id), order: 'asc', limit: 5000 });
    } catch (e) {
      box.appendChild(el('div', { class: 'note err', text: 'Task search failed: ' + e.message }));
      return;
    }
    const hits = res.hits || [];
    const attempts = new Map();
    for (const h of hits) {
      const a = h.attempt || '1';
      if (!attempts.has(a)) attempts.set(a, []);
      attempts.get(a).push(h);
    }
    const nums = [...attempts.keys()].sort((a, b) => Number(a) - Number(b));
    const dead = hits.some((h) => h.kind === 'deadletter');
    const last = hits[hits.length - 1];
    const lastBad = last && ['error', 'fatal'].includes(String(last.level).toLowerCase());
    const outcome = dead ? 'dead-lettered' : (lastBad ? 'failed' : (nums.length > 1 ? 'retried' : 'completed'));
    const outcomeText = dead ? 'dead-lettered' : (lastBad ? 'failed (last line is an error)'
      : (nums.length > 1 ? 'completed after ' + nums.length + ' attempts (retried)' : 'completed'));
    const card = (label, value, cls) => el('div', { class: 'card' },
      el('div', { class: 'label', text: label }), el('div', { class: cls || '', text: value }));
    append(sum,
      card('task', str((hits[0] || {}).task) || '—'),
      card('attempts', String(nums.length)),
      card('lines', String(res.total)),
      card('outcome', outcomeText, 'outcome outcome-' + outcome));
    if (hits.length) {
      const t0 = hitMillis(hits[0]), t1 = hitMillis(last);
      if (t0 !== null && t1 !== null) append(sum, card('duration', ((t1 - t0) / 1000).toFixed(3) + ' s'));
    }
    for (const a of nums) {
      const lines = attempts.get(a);
      const bad = lines.some((h) => ['error', 'fatal'].includes(String(h.level).toLowerCase()));
      box.appendChild(el('div', { class: 'attempt-head', text: 'attempt ' + a + ' · ' + lines.length + ' lines' + (bad ? ' · had errors' : '') }));
      for (const h of lines) box.appendChild(row(h));
    }
    if (!hits.length) box.appendChild(el('div', { class: 'note', text: 'No lines for this task run.' }));
  }

  // ---------- small table helper (dead letters, alerts) ----------
  // `columns`: [header, (obj) => text or Node]. Cells get text only.
  function table(id, columns, objs, rowClass) {
    const tbody = el('tbody');
    for (const o of objs) {
      tbody.appendChild(el('tr', { class: rowClass ? rowClass(o) : null },
        columns.map(([, f]) => { const v = f(o); return el('td', null, v instanceof Node ? v : str(v)); })));
    }
    return el('table', { class: 'grid', id }, el('thead', null,
      el('tr', null, columns.map(([h]) => el('th', { text: h })))), tbody);
  }
  function authNote(e, what) {
    if (e.status === 401) return what + ': a token is needed (' + e.message + ')';
    if (e.status === 403) return what + ': ' + e.message + ' (this page needs the admin scope)';
    return what + ': ' + e.message;
  }
  // A button that asks for a second click before it acts (no confirm(): it blocks the page).
  function twoStep(label, confirmLabel, cls, act) {
    const b = el('button', { type: 'button', class: cls, text: label });
    let armed = null;
    b.addEventListener('click', async () => {
      if (!armed) {
        b.textContent = confirmLabel;
        b.classList.add('armed');
        armed = setTimeout(() => { armed = null; b.textContent = label; b.classList.remove('armed'); }, 4000);
        return;
      }
      clearTimeout(armed); armed = null;
      b.textContent = label; b.classList.remove('armed');
      b.disabled = true;
      try { await act(); } finally { b.disabled = false; }
    });
    return b;
  }

  // ---------- dead letters ----------
  async function renderDlq() {
    const list = $('dlq-list'), msg = $('dlq-msg');
    clear(list); msg.textContent = 'Loading…'; msg.className = 'note';
    $('dlq-detail').hidden = true;
    const params = { limit: 500, task: $('dlq-task').value.trim(), state: $('dlq-state').value };
    try {
      const res = await api('/api/v1/dlq', params);
      const entries = res.entries || [];
      msg.textContent = entries.length + ' of ' + res.total + ' dead letters' +
        (entries.length ? ' · inspect one to see it in full; dry run shows what a replay would send' : '');
      if (!entries.length) return;
      list.appendChild(table('dlq-table', [
        ['id', (e) => e.id],
        ['task', (e) => e.task],
        ['task_id', (e) => e.task_id],
        ['state', (e) => el('span', { class: 'state state-' + str(e.state), text: str(e.state) })],
        ['attempts', (e) => e.attempts],
        ['error', (e) => el('span', { class: 'clip', title: str(e.error), text: str(e.error) })],
        ['last failed', (e) => e.last_failed || e.ts],
        ['replays', (e) => e.replays],
        ['', (e) => el('span', { class: 'row-actions' },
          el('button', { type: 'button', class: 'ghost mini dlq-inspect', text: 'Inspect', onclick: () => showDlq(e, null) }),
          el('button', { type: 'button', class: 'ghost mini dlq-dry', text: 'Dry run', onclick: () => showDlq(e, 'dry') }))],
      ], entries, (e) => 'dlq-row dlq-' + str(e.state)));
      for (const tr of list.querySelectorAll('tbody tr')) {
        const i = [...tr.parentNode.children].indexOf(tr);
        tr.dataset.id = str(entries[i].id);
      }
    } catch (e) {
      msg.className = 'note err';
      msg.textContent = authNote(e, 'Dead letters unavailable');
    }
  }

  // The detail panel of one entry: every field, then dry run / replay / discard.
  async function showDlq(entry, action) {
    const d = $('dlq-detail');
    clear(d); d.hidden = false;
    d.dataset.id = str(entry.id);
    const result = el('div', { id: 'dlq-result', class: 'dlq-result', hidden: true });
    const report = (node) => { clear(result); result.hidden = false; result.appendChild(node); };
    const fail = (e, what) => report(el('div', { class: 'note err', text: authNote(e, what) }));
    const fields = el('tbody');
    for (const [k, v] of Object.entries(entry)) {
      if (v === null || v === undefined) continue;
      fields.appendChild(el('tr', null, el('td', { class: 'k', text: k }),
        el('td', { class: 'v', text: typeof v === 'object' ? JSON.stringify(v, null, 2) : str(v) })));
    }
    const dryRun = async () => {
      try {
        const res = await api('/api/v1/dlq/replay', null, { method: 'POST', headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ ids: [entry.id], dry_run: true }) });
        report(dryRunView(res));
      } catch (e) { fail(e, 'Dry run failed'); }
    };
    const replay = async () => {
      try {
        const res = await api('/api/v1/dlq/' + encodeURIComponent(str(entry.id)) + '/replay', null, { method: 'POST' });
        const job = res.job || {};
        const e = res.entry || {};
        const answer = e.last_attempt ? ' · ' + (e.last_attempt.status ? 'HTTP ' + e.last_attempt.status : '') +
          (e.last_attempt.answer ? ' ' + str(e.last_attempt.answer) : '') : '';
        report(el('div', { class: job.failed ? 'note err' : 'note', id: 'dlq-replayed',
          text: (job.failed ? 'Replay failed' : (job.refused ? 'Replay refused' : 'Replayed')) +
            ' · entry is now ' + str(e.state) + answer }));
        refreshDlqRow(res.entry);
      } catch (e) { fail(e, 'Replay refused'); }
    };
    const discard = async () => {
      try {
        const res = await api('/api/v1/dlq/' + encodeURIComponent(str(entry.id)) + '/discard', null, { method: 'POST' });
        report(el('div', { class: 'note', id: 'dlq-discarded', text: 'Discarded by ' + str(res.discarded_by) }));
        refreshDlqRow(res);
      } catch (e) { fail(e, 'Discard failed'); }
    };
    append(d, el('div', { class: 'view-head' }, el('h3', { text: 'Dead letter ' + str(entry.id) + ' · ' + str(entry.task) })),
      el('table', { class: 'fields' }, fields),
      el('div', { class: 'row-actions' },
        el('button', { type: 'button', class: 'ghost', id: 'dlq-dry-btn', text: 'Dry run', onclick: dryRun }),
        twoStep('Replay', 'Click again to replay', 'dlq-replay-btn', replay),
        twoStep('Discard', 'Click again to discard', 'ghost dlq-discard-btn', discard),
        entry.task_id ? el('button', { type: 'button', class: 'ghost', text: 'Task run',
          onclick: () => navigate({ view: 'task', task_id: str(entry.task_id) }) }) : null),
      result);
    d.scrollIntoView({ block: 'nearest' });
    if (action === 'dry') await dryRun();
  }
  function dryRunView(res) {
    const box = el('div', { id: 'dlq-dryrun', class: 'dryrun' });
    for (const s of res.send || []) {
      box.appendChild(el('div', { class: 'would-send' },
        el('div', { class: 'dr-head' }, el('strong', { text: 'Would send' }), ' to ', el('code', { class: 'dr-url', text: str(s.url) })),
        el('div', null, 'Idempotency-Key: ', el('code', { class: 'dr-key', text: str(s.idempotency_key) })),
        el('pre', { class: 'raw dr-body', text: JSON.stringify(s.body !== undefined ? s.body : s.entry, null, 2) })));
    }
    for (const r of res.refused || []) {
      box.appendChild(el('div', { class: 'refused note err' }, el('strong', { text: 'Refused: ' }), str(r.reason)));
    }
    if (!(res.send || []).length && !(res.refused || []).length) box.appendChild(el('div', { class: 'note', text: 'Nothing would be sent.' }));
    box.appendChild(el('div', { class: 'note', text: 'Dry run: nothing was sent.' }));
    return box;
  }
  function refreshDlqRow(entry) {
    if (!entry) return;
    const tr = document.querySelector('#dlq-table tr[data-id="' + CSS.escape(str(entry.id)) + '"]');
    if (!tr) return;
    tr.className = 'dlq-row dlq-' + str(entry.state);
    const st = tr.querySelector('.state');
    if (st) { st.textContent = str(entry.state); st.className = 'state state-' + str(entry.state); }
  }

  // ---------- alerts ----------
  let alertRules = [];
  async function renderAlerts() {
    const body = $('alerts-body'), msg = $('alerts-msg');
    clear(body); msg.textContent = 'Loading…'; msg.className = 'note';
    let res;
    try {
      res = await api('/api/v1/alerts');
    } catch (e) {
      msg.className = 'note err';
      msg.textContent = authNote(e, 'Alerts unavailable');
      return;
    }
    alertRules = res.rules || [];
    msg.textContent = alertRules.length + ' rules · ' + (res.silences || []).length + ' active silences' +
      (res.undelivered ? ' · ' + res.undelivered + ' notifications waiting for delivery' : '');
    body.appendChild(el('h2', { text: 'Rules' }));
    if (!alertRules.length) body.appendChild(el('div', { class: 'note', text: 'No rules are configured ([[alerts.rule]]).' }));
    else body.appendChild(rulesTable(alertRules));
    body.appendChild(el('h2', { text: 'Silences' }));
    body.appendChild(silencesView(res.silences || []));
    body.appendChild(silenceForm(alertRules));
    body.appendChild(el('h2', { id: 'history-title', text: 'History' }));
    body.appendChild(el('div', { id: 'alert-history' }));
    renderHistory('');
  }
  function labelsText(obj) {
    return Object.entries(obj || {}).map(([k, v]) => k + '=' + str(v)).join(' ');
  }
  function rulesTable(rules) {
    const tbody = el('tbody');
    for (const r of rules) {
      tbody.appendChild(el('tr', { class: 'rule', 'data-rule': r.name },
        el('td', { text: str(r.name) }),
        el('td', { text: str(r.kind) }),
        el('td', null, el('button', { type: 'button', class: 'fval', title: 'Search these lines',
          onclick: () => navigate({ view: 'search', q: str(r.query), from: str(r.window) || DEFAULT_RANGE, to: '' }), text: str(r.query) })),
        el('td', { text: str(r.threshold) }),
        el('td', { text: str(r.window) }),
        el('td', null, el('span', { class: 'state state-' + str(r.state), text: str(r.state) })),
        el('td', { text: str(r.severity) }),
        el('td', { text: (r.notify || []).map(str).join(', ') }),
        el('td', null, el('span', { class: 'row-actions' },
          el('button', { type: 'button', class: 'ghost mini', text: 'History', onclick: () => renderHistory(str(r.name)) }),
          el('button', { type: 'button', class: 'ghost mini', text: 'Silence', onclick: () => {
            $('silence-rule').value = str(r.name); $('silence-duration').focus();
          } })))));
      for (const a of r.alerts || []) {
        tbody.appendChild(el('tr', { class: 'alert-instance' },
          el('td', { class: 'indent', text: '↳ ' + (labelsText(a.group) || 'alert') }),
          el('td', { colspan: 4, text: 'value ' + str(a.value) +
            (a.active_since ? ' · active since ' + fmtLocal(Date.parse(a.active_since), true) : '') +
            (a.fired_at ? ' · fired ' + fmtLocal(Date.parse(a.fired_at), true) : '') +
            (a.resolved_at ? ' · resolved ' + fmtLocal(Date.parse(a.resolved_at), true) : '') }),
          el('td', null, el('span', { class: 'state state-' + str(a.state), text: str(a.state) })),
          el('td', { colspan: 3, text: a.notified_at ? 'notified ' + fmtLocal(Date.parse(a.notified_at), true) : '' })));
      }
    }
    return el('table', { class: 'grid', id: 'alert-rules' }, el('thead', null, el('tr', null,
      ['rule', 'kind', 'query', 'threshold', 'window', 'state', 'severity', 'notify', ''].map((h) => el('th', { text: h })))), tbody);
  }
  function silencesView(silences) {
    if (!silences.length) return el('div', { class: 'note', id: 'silences-none', text: 'No active silences.' });
    const t = table('silences', [
      ['matchers', (s) => labelsText(s.matchers)],
      ['until', (s) => el('span', { title: 'UTC ' + str(s.expires_at), text: fmtLocal(Date.parse(s.expires_at), true) })],
      ['comment', (s) => s.comment],
      ['by', (s) => s.created_by],
      ['id', (s) => s.id],
      ['', (s) => twoStep('Expire', 'Click again to expire', 'ghost mini expire-btn', async () => {
        try {
          await api('/api/v1/alerts/silences/' + encodeURIComponent(str(s.id)), null, { method: 'DELETE' });
          toast('Silence expired');
          renderAlerts();
        } catch (e) { $('silence-msg').className = 'note err'; $('silence-msg').textContent = authNote(e, 'Could not expire'); }
      })],
    ], silences, () => 'silence');
    const rows = t.querySelectorAll('tbody tr');
    silences.forEach((s, i) => { rows[i].dataset.id = str(s.id); });
    return t;
  }
  // Creating a silence needs the admin scope; the collector says so if the token lacks it.
  function silenceForm(rules) {
    const f = el('form', { id: 'silence-form', class: 'silence-form', autocomplete: 'off' },
      el('label', { for: 'silence-rule', text: 'Rule' }),
      el('select', { id: 'silence-rule' }, el('option', { value: '', text: '(any rule: use matchers)' }),
        rules.map((r) => el('option', { value: str(r.name), text: str(r.name) }))),
      el('label', { for: 'silence-matchers', text: 'Labels' }),
      el('input', { id: 'silence-matchers', type: 'text', placeholder: 'task=charge host=web-1', spellcheck: 'false' }),
      el('label', { for: 'silence-duration', text: 'For' }),
      el('input', { id: 'silence-duration', type: 'text', value: '1h', size: 6 }),
      el('label', { for: 'silence-comment', text: 'Comment' }),
      el('input', { id: 'silence-comment', type: 'text', placeholder: 'why' }),
      el('button', { type: 'submit', id: 'silence-create', text: 'Create silence' }));
    const out = el('div', { id: 'silence-msg', class: 'note' });
    f.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const matchers = {};
      for (const pair of $('silence-matchers').value.trim().split(/\s+/).filter(Boolean)) {
        const i = pair.indexOf('=');
        if (i <= 0) { out.className = 'note err'; out.textContent = 'Labels are written key=value: ' + pair; return; }
        matchers[pair.slice(0, i)] = pair.slice(i + 1);
      }
      const rule = $('silence-rule').value;
      if (!rule && !Object.keys(matchers).length) { out.className = 'note err'; out.textContent = 'Pick a rule or give labels.'; return; }
      const req = { matchers, duration: $('silence-duration').value.trim(), comment: $('silence-comment').value };
      if (rule) req.rule = rule;
      try {
        const sil = await api('/api/v1/alerts/silences', null, { method: 'POST',
          headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(req) });
        toast('Silence ' + str(sil.id) + ' created');
        await renderAlerts();
      } catch (e) {
        out.className = 'note err';
        out.textContent = authNote(e, 'Could not create the silence');
      }
    });
    return el('div', null, f, out);
  }
  // The history is the audit log's `kind=alert` lines (one per phase change), searched.
  async function renderHistory(rule) {
    const box = $('alert-history');
    if (!box) return;
    clear(box);
    $('history-title').textContent = rule ? 'History of ' + rule : 'History (all rules)';
    const q = 'kind:alert' + (rule ? ' alert:' + quoteValue(rule) : '');
    try {
      const res = await api('/api/v1/search', { q, from: '7d', limit: 200 });
      const hits = res.hits || [];
      if (!hits.length) { box.appendChild(el('div', { class: 'note', text: 'No state changes in the last 7 days.' })); return; }
      box.appendChild(table('alert-history-table', [
        ['time', (h) => { const ms = hitMillis(h); return el('span', { title: fullTs(h), text: ms === null ? '' : fmtLocal(ms, true) }); }],
        ['rule', (h) => h.alert],
        ['change', (h) => el('span', null, el('span', { class: 'state state-' + str(h.from_state), text: str(h.from_state) }), ' → ',
          el('span', { class: 'state state-' + str(h.state), text: str(h.state) }))],
        ['value', (h) => h.value],
        ['threshold', (h) => h.threshold],
        ['window', (h) => h.window],
        ['group', (h) => h.group],
      ], hits, () => 'history-row'));
      box.appendChild(el('div', { class: 'note' }, el('button', { type: 'button', class: 'fval',
        onclick: () => navigate({ view: 'search', q, from: '7d', to: '' }), text: 'Open as a search: ' + q })));
    } catch (e) {
      box.appendChild(el('div', { class: 'note err', text: authNote(e, 'History unavailable') }));
    }
  }

  // ---------- wiring ----------
  function submitSearch() {
    const q = $('q').value.trim();
    const preset = $('range').value;
    let from = preset, to = '';
    if (preset === 'custom') { from = $('from').value.trim() || 'all'; to = $('to').value.trim(); }
    limit = PAGE;
    navigate({ view: 'search', q, from, to });
    if (tail.on) startTail();
  }
  function init() {
    $('query-form').addEventListener('submit', (ev) => { ev.preventDefault(); submitSearch(); });
    $('range').addEventListener('change', () => {
      $('custom-range').hidden = $('range').value !== 'custom';
      if ($('range').value !== 'custom') submitSearch(); else $('from').focus();
    });
    $('tail-btn').addEventListener('click', () => { if (tail.on) stopTail(); else startTail(); });
    $('pause-btn').addEventListener('click', togglePause);
    $('more-btn').addEventListener('click', () => { limit += PAGE * 4; renderSearch(); });
    for (const b of document.querySelectorAll('.back')) {
      b.addEventListener('click', () => navigate({ view: 'search' }));
    }
    for (const a of document.querySelectorAll('.top nav a, #brand')) {
      a.addEventListener('click', (ev) => {
        if (ev.ctrlKey || ev.metaKey || ev.shiftKey) return;
        ev.preventDefault();
        navigate({ view: a.dataset.view || 'search' });
      });
    }
    $('dlq-refresh').addEventListener('click', renderDlq);
    $('dlq-filter').addEventListener('submit', (ev) => { ev.preventDefault(); renderDlq(); });
    $('alerts-refresh').addEventListener('click', renderAlerts);
    $('token-btn').addEventListener('click', () => { $('token-form').hidden = !$('token-form').hidden; });
    $('token-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const t = $('token-input').value.trim();
      if (!t) { $('token-input').focus(); return; }
      try { sessionStorage.setItem(TOKEN_KEY, t); } catch (_) { /* storage off */ }
      $('token-input').value = '';
      $('token-form').hidden = true;
      $('auth-msg').hidden = true;
      markToken();
      const wasTailing = tail.on;
      render();
      if (wasTailing && state.view === 'search') startTail();
    });
    $('token-clear').addEventListener('click', () => {
      try { sessionStorage.removeItem(TOKEN_KEY); } catch (_) { /* storage off */ }
      $('token-form').hidden = true;
      markToken();
      toast('Token forgotten');
    });
    markToken();
    document.addEventListener('keydown', (ev) => {
      if (ev.key === '/' && document.activeElement.tagName !== 'INPUT') { ev.preventDefault(); $('q').focus(); }
    });
    render();
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init); else init();
})();
