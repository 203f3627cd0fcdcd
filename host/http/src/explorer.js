// The conflict explorer: the cloud tier's last-writer-wins conflicts for
// people. One dependency-free script shared by every Outpost dashboard (the
// edge admin's, the lab's), served as `/explorer.js` beside it.
//
//   const explorer = OutpostExplorer.mount(element, {
//     base: '',                                  // API prefix ('' or '/api')
//     headers: () => ({ Authorization: 'Bearer ' + token }),  // per request
//     pollMs: 2000,                              // new conflicts; 0: no polling
//   });
//   explorer.refresh(); explorer.showHistory(store, key); explorer.destroy();
//
// It calls, under `base`:
//   GET  /conflicts?since=I&limit=N&store=&prefix=&node=&kind=&reviewed=
//        -> {items: [explained conflict + review], next}
//   GET  /conflicts/stats?store=&prefix=&node=&kind=&reviewed=&bucket_s=
//        -> {total, benign, divergent, reviewed, by_store, by_pair, over_time, window, complete}
//   GET  /history?store=S&key=K&limit=N
//        -> {store, key, current, versions: [...], lost: [...], window}
//   POST /conflicts/ID/review {note} -> {id, review: {by, at_ms, note}}
//
// A value is shown as the cloud gives it (`{format, text}`), in full;
// one that alone passed the answer's byte budget comes cut (`cut: true,
// full_bytes: N`) and is shown with a note saying how much of it that is
// (`value-cut`); a history the budget stopped (`window.truncated`) says
// so too (`history-truncated`).
//
// Every part a test looks for has a `data-testid`; the root carries
// `data-loads` (list loads finished) and `data-state` (ok, error, auth,
// no-cloud). Data is never parsed as HTML: every node is built with
// createElement and text.
(function (global) {
  'use strict';

  // A value longer than this (characters or lines) starts collapsed.
  const COLLAPSE_CHARS = 400, COLLAPSE_LINES = 8;
  // Conflicts kept in the list (the newest); pages asked per read.
  const KEEP = 1000, PAGE = 200, MAX_PAGES = 10;
  const STATS_EVERY_MS = 30000;

  const STYLE = `
.ox { --ox-border: var(--border, #e2e5e9); --ox-muted: var(--muted, #6b7280); --ox-panel: var(--panel, #fff);
  --ox-bg: var(--bg, #f4f5f7); --ox-ok: var(--ok, #15803d); --ox-bad: var(--bad, #dc2626); --ox-warn: var(--warn, #b45309);
  --ox-accent: var(--c1, #2563eb); display: flex; flex-direction: column; gap: 10px; min-width: 0; }
.ox * { box-sizing: border-box; }
.ox [hidden] { display: none !important; }
.ox .ox-muted { color: var(--ox-muted); }
.ox .ox-mono, .ox pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; }
.ox .ox-filters { display: flex; flex-wrap: wrap; gap: 6px 12px; align-items: end; }
.ox .ox-filters label { display: flex; flex-direction: column; font-size: 11px; color: var(--ox-muted); gap: 2px; }
.ox input, .ox select, .ox button, .ox textarea { font: inherit; color: inherit; background: var(--ox-panel);
  border: 1px solid var(--ox-border); border-radius: 4px; padding: 2px 6px; }
.ox button { cursor: pointer; } .ox button:disabled { opacity: .6; cursor: default; }
.ox .ox-link { border: 0; padding: 0; background: none; color: var(--ox-accent); text-decoration: underline; cursor: pointer; text-align: left; }
.ox .ox-note { margin: 0; color: var(--ox-warn); } .ox .ox-note.ox-muted { color: var(--ox-muted); }
.ox .ox-stats { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr) minmax(0, 1.4fr); gap: 12px; }
@media (max-width: 900px) { .ox .ox-stats { grid-template-columns: 1fr; } }
.ox .ox-totals { display: flex; flex-wrap: wrap; gap: 4px 16px; }
.ox .ox-totals b { font-variant-numeric: tabular-nums; font-size: 14px; }
.ox table { border-collapse: collapse; width: 100%; }
.ox th, .ox td { text-align: left; padding: 2px 6px; border-bottom: 1px solid var(--ox-border); }
.ox th { color: var(--ox-muted); font-weight: 500; font-size: 11px; }
.ox td.ox-num, .ox th.ox-num { text-align: right; font-variant-numeric: tabular-nums; }
.ox tr[data-store] { cursor: pointer; }
.ox h3 { font-size: 12px; font-weight: 600; margin: 0 0 4px; }
.ox .ox-chart { display: flex; align-items: flex-end; gap: 2px; height: 64px; border-bottom: 1px solid var(--ox-border); }
.ox .ox-bar { flex: 1 1 0; min-width: 2px; max-width: 24px; background: var(--ox-accent); border-radius: 2px 2px 0 0; }
.ox .ox-axis { display: flex; justify-content: space-between; font-size: 11px; color: var(--ox-muted); }
.ox .ox-list { display: flex; flex-direction: column; gap: 8px; }
.ox .ox-conflict { border: 1px solid var(--ox-border); border-radius: 6px; padding: 8px; min-width: 0; }
.ox .ox-conflict.ox-flash { outline: 2px solid var(--ox-accent); }
.ox .ox-head { display: flex; flex-wrap: wrap; gap: 4px 10px; align-items: baseline; margin-bottom: 6px; }
.ox .ox-badge { font-size: 11px; padding: 0 6px; border-radius: 4px; border: 1px solid currentColor; }
.ox .ox-benign { color: var(--ox-ok); } .ox .ox-divergent { color: var(--ox-bad); }
.ox .ox-reviewed { color: var(--ox-muted); }
.ox .ox-writes { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 8px; }
@media (max-width: 700px) { .ox .ox-writes { grid-template-columns: 1fr; } }
.ox .ox-write { border-left: 3px solid var(--ox-border); padding-left: 8px; min-width: 0; }
.ox .ox-write.ox-won { border-left-color: var(--ox-ok); }
.ox .ox-write.ox-lost { border-left-color: var(--ox-bad); }
.ox .ox-write-head { display: flex; flex-wrap: wrap; gap: 2px 8px; font-size: 12px; }
/* Values are wrapped (no horizontal scrollbar hides text), and a long one is
   collapsed to a few lines until "show all". Only the cloud cuts one (past
   its answer budget), and then the note above it says so. */
.ox pre.ox-value { margin: 4px 0 0; padding: 4px 6px; background: var(--ox-bg); border-radius: 4px;
  white-space: pre-wrap; overflow-wrap: anywhere; word-break: break-word; overflow: hidden; }
.ox pre.ox-value.ox-collapsed { max-height: 9.5em; }
.ox pre.ox-value.ox-cut { border-bottom: 2px dashed var(--ox-warn); }
.ox .ox-cut-note { margin: 4px 0 0; font-size: 12px; }
.ox .ox-review { margin-top: 6px; display: flex; flex-wrap: wrap; gap: 4px 8px; align-items: center; font-size: 12px; }
.ox .ox-history { border: 1px solid var(--ox-accent); border-radius: 6px; padding: 8px; min-width: 0; }
.ox .ox-version { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 8px;
  padding: 6px 0; border-bottom: 1px solid var(--ox-border); }
@media (max-width: 700px) { .ox .ox-version { grid-template-columns: 1fr; } }
.ox .ox-version.ox-current > .ox-write { border-left-color: var(--ox-ok); }
.ox .ox-lost-list { display: flex; flex-direction: column; gap: 6px; }
`;

  // ---- helpers ------------------------------------------------------------
  // An element from data: attributes (on* as listeners), then children as
  // nodes or text; never HTML.
  function h(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const kid of kids.flat()) if (kid != null) e.append(kid instanceof Node ? kid : String(kid));
    return e;
  }
  // Replaces `e`'s children with `kids`, skipping null (which the DOM's
  // own replaceChildren would show as the text "null").
  function fill(e, ...kids) {
    e.replaceChildren(...kids.flat().filter(k => k != null));
    return e;
  }
  // HLC stamps pass 2^53: quote them before parsing, so they stay exact.
  const quoteHlc = text => text.replace(/"hlc"\s*:\s*(\d+)/g, '"hlc":"$1"');
  function cmpVersion(a, b) {  // newest first: HLC, then node id
    const ha = BigInt(a.hlc), hb = BigInt(b.hlc);
    if (ha !== hb) return ha > hb ? -1 : 1;
    return a.node === b.node ? 0 : a.node > b.node ? -1 : 1;
  }
  const sameVersion = (a, b) => a && b && String(a.hlc) === String(b.hlc) && a.node === b.node;
  const pad = (n, w) => String(n).padStart(w || 2, '0');
  function fmtTime(ms) {
    if (ms == null) return '—';
    const d = new Date(Number(ms));
    if (isNaN(d)) return String(ms);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  }
  const isoTime = ms => { const d = new Date(Number(ms)); return isNaN(d) ? '' : d.toISOString(); };
  const time = (ms, testid) => h('time', { 'data-testid': testid || 'write-time', 'data-ms': ms, datetime: isoTime(ms), title: isoTime(ms) }, fmtTime(ms));
  function fmtBytes(n) {
    n = Number(n);
    if (!Number.isFinite(n)) return '?';
    let i = 0;
    for (; n >= 1024 && i < 4; i++) n /= 1024;
    return (i ? +n.toFixed(1) : n).toLocaleString() + ' ' + ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'][i];
  }
  const utf8Bytes = text => new TextEncoder().encode(text).length;
  const bucketName = s => ({ 60: 'minute', 3600: 'hour', 86400: 'day' })[s] || `${s} s`;
  const REASONS = {
    'higher-hlc': 'its write is later (higher HLC)',
    'node-id-tie': 'same HLC; the higher node id breaks the tie',
  };

  // A stored value as text, in full as the cloud sent it: long ones
  // collapsed behind a toggle; one the cloud cut, under a note saying so.
  function valueBlock(shown) {
    shown = shown || { format: 'deleted', text: '' };
    if (shown.format === 'deleted') {
      return h('pre', { class: 'ox-value ox-muted', 'data-testid': 'write-value', 'data-format': 'deleted' }, '(deleted)');
    }
    const text = shown.text == null ? '' : String(shown.text);
    const cut = shown.cut === true;
    const pre = h('pre', { class: 'ox-value' + (cut ? ' ox-cut' : ''), 'data-testid': 'write-value', 'data-format': shown.format,
      'data-cut': cut ? 'true' : null, title: shown.format }, text);
    if (text === '') pre.append(h('i', { class: 'ox-muted' }, '(empty)'));
    let note = null;
    if (cut) {
      const kept = utf8Bytes(text), full = shown.full_bytes;
      note = h('p', { class: 'ox-note ox-cut-note', 'data-testid': 'value-cut', 'data-shown-bytes': kept, 'data-full-bytes': full,
        title: `${kept.toLocaleString()} of ${full == null ? '?' : Number(full).toLocaleString()} bytes of the ${shown.format} display` },
        `Shown: the first ${fmtBytes(kept)} of ${full == null ? 'more' : fmtBytes(full)}; the rest is past the answer budget.`);
    }
    const lines = text.split('\n').length;
    if (text.length <= COLLAPSE_CHARS && lines <= COLLAPSE_LINES) return note ? h('div', { class: 'ox-value-wrap' }, note, pre) : pre;
    pre.classList.add('ox-collapsed');
    const size = `${text.length.toLocaleString()} chars` + (lines > 1 ? `, ${lines} lines` : '');
    const more = () => cut ? `show all that is shown (${size})` : `show all (${size})`;
    const toggle = h('button', { type: 'button', class: 'ox-link', 'data-testid': 'value-toggle', 'aria-expanded': 'false' }, more());
    toggle.addEventListener('click', () => {
      const collapsed = pre.classList.toggle('ox-collapsed');
      toggle.setAttribute('aria-expanded', String(!collapsed));
      toggle.textContent = collapsed ? more() : 'show less';
    });
    return h('div', { class: 'ox-value-wrap' }, note, pre, toggle);
  }

  // One write: node, time, HLC, value.
  function writeBlock(testid, label, cls, version, ms, shown, extra) {
    return h('div', { class: 'ox-write ' + (cls || ''), 'data-testid': testid, 'data-node': version.node, 'data-hlc': version.hlc },
      h('div', { class: 'ox-write-head' },
        h('b', null, label),
        h('span', { class: 'ox-mono', 'data-testid': 'write-node' }, version.node),
        time(ms),
        h('span', { class: 'ox-muted ox-mono', title: 'HLC stamp' }, 'hlc ' + version.hlc),
        extra || null),
      valueBlock(shown));
  }

  // ---- the explorer -------------------------------------------------------
  function mount(root, options) {
    const opts = Object.assign({ base: '', headers: () => ({}), pollMs: 2000 }, options || {});
    const base = String(opts.base || '').replace(/\/+$/, '');
    if (!document.getElementById('outpost-explorer-style')) {
      document.head.append(h('style', { id: 'outpost-explorer-style' }, STYLE));
    }

    async function call(method, path, body) {
      const headers = Object.assign({}, typeof opts.headers === 'function' ? opts.headers() : opts.headers);
      if (body !== undefined) headers['Content-Type'] = 'application/json';
      let res, text;
      try {
        res = await fetch(base + path, { method, headers, cache: 'no-store',
          body: body === undefined ? undefined : JSON.stringify(body) });
        text = await res.text();
      } catch (e) { throw { kind: 'net', message: 'unreachable: ' + e }; }
      let data = null;
      try { data = JSON.parse(quoteHlc(text)); } catch (_) { /* not JSON */ }
      if (res.status === 401) throw { kind: 'auth', status: 401, message: 'a token is required (or it is wrong)' };
      if (!res.ok || data === null) {
        throw { kind: 'http', status: res.status, code: data && data.error, id: data && data.id,
          message: ((data && (data.message || data.error)) || `HTTP ${res.status}`) + (data && data.id ? ` (error id ${data.id})` : '') };
      }
      return data;
    }
    const query = params => {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(params)) if (v != null && v !== '') q.set(k, String(v));
      return q.toString();
    };

    // -- state
    const filters = { store: '', prefix: '', node: '', kind: '', reviewed: '' };
    let bucket = 60;
    let cursor = 0, generation = 0, loads = 0, timer = null, statsAt = 0, busy = false, destroyed = false;
    const items = new Map();      // id -> conflict
    const articles = new Map();   // id -> its element

    // -- skeleton
    const input = (name, placeholder) => {
      const e = h('input', { type: 'search', 'data-testid': 'filter-' + name, placeholder, size: 14 });
      let debounce = null;
      e.addEventListener('input', () => {
        clearTimeout(debounce);
        debounce = setTimeout(() => { filters[name] = e.value.trim(); reload(); }, 300);
      });
      return h('label', null, name, e);
    };
    const select = (name, label, choices, onChange) => {
      const e = h('select', { 'data-testid': name }, choices.map(([v, t]) => h('option', { value: v }, t)));
      e.addEventListener('change', () => onChange(e.value));
      return [h('label', null, label, e), e];
    };
    const [kindLabel] = select('filter-kind', 'kind', [['', 'all'], ['benign', 'benign'], ['divergent', 'divergent']],
      v => { filters.kind = v; reload(); });
    const [reviewedLabel] = select('filter-reviewed', 'reviewed', [['', 'all'], ['false', 'not reviewed'], ['true', 'reviewed']],
      v => { filters.reviewed = v; reload(); });
    const [bucketLabel] = select('stats-bucket', 'chart bucket', [['60', 'minute'], ['3600', 'hour'], ['86400', 'day']],
      v => { bucket = Number(v); loadStats(); });
    const storeInput = input('store', 'any store'), nodeInput = input('node', 'any node');
    const filterBar = h('div', { class: 'ox-filters', 'data-testid': 'explorer-filters' },
      storeInput, input('prefix', 'key prefix'), nodeInput, kindLabel, reviewedLabel, bucketLabel,
      h('button', { type: 'button', 'data-testid': 'explorer-refresh', onclick: () => reload() }, 'refresh'));
    const note = h('p', { class: 'ox-note', 'data-testid': 'explorer-error', hidden: true });
    const totals = h('div', { class: 'ox-totals', 'data-testid': 'stats-totals' });
    const byStore = h('tbody');
    const byPair = h('tbody');
    const chart = h('div', { class: 'ox-chart', 'data-testid': 'stats-over-time' });
    const axis = h('div', { class: 'ox-axis' });
    const statsNote = h('p', { class: 'ox-note ox-muted', 'data-testid': 'stats-note', hidden: true });
    const stats = h('div', { 'data-testid': 'explorer-stats' },
      totals, statsNote,
      h('div', { class: 'ox-stats' },
        h('div', null, h('h3', null, 'Per store'),
          h('table', { 'data-testid': 'stats-by-store' },
            h('thead', null, h('tr', null, h('th', null, 'store'), h('th', { class: 'ox-num' }, 'all'),
              h('th', { class: 'ox-num' }, 'benign'), h('th', { class: 'ox-num' }, 'divergent'))), byStore)),
        h('div', null, h('h3', null, 'Per node pair'),
          h('table', { 'data-testid': 'stats-by-pair' },
            h('thead', null, h('tr', null, h('th', null, 'nodes'), h('th', { class: 'ox-num' }, 'conflicts'))), byPair)),
        h('div', null, h('h3', null, 'Over time'), chart, axis)));
    const history = h('div', { class: 'ox-history', 'data-testid': 'history', hidden: true });
    const list = h('div', { class: 'ox-list', 'data-testid': 'conflict-list' });
    const empty = h('p', { class: 'ox-muted', 'data-testid': 'conflicts-empty', hidden: true }, 'No conflicts.');
    const more = h('p', { class: 'ox-muted', 'data-testid': 'conflicts-more', hidden: true });
    const container = h('div', { class: 'ox', 'data-testid': 'explorer', 'data-loads': '0', 'data-state': 'loading' },
      filterBar, note, stats, history, list, empty, more);
    root.replaceChildren(container);

    function setState(state, message, muted) {
      container.dataset.state = state;
      note.textContent = message || '';
      note.hidden = !message;
      note.className = 'ox-note' + (muted ? ' ox-muted' : '');
    }
    function failed(e) {
      if (e && e.kind === 'http' && e.code === 'no-cloud') setState('no-cloud', 'No cloud tier configured on this node: conflicts live there.', true);
      else if (e && e.kind === 'auth') setState('auth', 'Conflicts: ' + e.message);
      else setState('error', 'Conflicts: ' + ((e && e.message) || String(e)));
    }

    // -- the list
    function reviewBlock(c) {
      const box = h('div', { class: 'ox-review', 'data-testid': 'conflict-review', 'data-reviewed': String(!!c.review) });
      if (c.review) {
        fill(box, h('span', { class: 'ox-reviewed' }, '✓ reviewed by ', h('b', { 'data-testid': 'review-by' }, c.review.by),
          ' at ', time(c.review.at_ms, 'review-time')),
          c.review.note ? h('span', { 'data-testid': 'review-note-text' }, '— ' + c.review.note) : null);
        return box;
      }
      const noteInput = h('input', { type: 'text', 'data-testid': 'review-note', placeholder: 'note (optional)', size: 24 });
      const status = h('span', { class: 'ox-note', 'data-testid': 'review-error', hidden: true });
      const button = h('button', { type: 'button', 'data-testid': 'review-button' }, 'mark reviewed');
      button.addEventListener('click', async () => {
        button.disabled = true; status.hidden = true;
        try {
          const text = noteInput.value.trim();
          const answer = await call('POST', `/conflicts/${encodeURIComponent(c.id)}/review`, text ? { note: text } : {});
          c.review = answer.review || { by: '?', at_ms: Date.now(), note: text || null };
          articles.get(c.id)?.replaceWith(article(c));
          loadStats();
        } catch (e) {
          button.disabled = false;
          status.textContent = e.message || String(e); status.hidden = false;
        }
      });
      box.append(h('span', { class: 'ox-muted' }, 'not reviewed'), noteInput, button, status);
      return box;
    }

    function article(c) {
      const divergent = c.kind === 'divergent';
      const keyLink = h('button', { type: 'button', class: 'ox-link ox-mono', 'data-testid': 'conflict-key', title: 'history of this key' }, c.key);
      keyLink.addEventListener('click', () => showHistory(c.store, c.key));
      const e = h('article', { class: 'ox-conflict', 'data-testid': 'conflict', 'data-conflict-id': c.id, 'data-kind': c.kind,
        'data-store': c.store, 'data-key': c.key, 'data-reviewed': String(!!c.review) },
        h('div', { class: 'ox-head' },
          h('span', { class: 'ox-badge ' + (divergent ? 'ox-divergent' : 'ox-benign'), 'data-testid': 'conflict-kind',
            title: divergent ? 'the losing write carried another value: it is lost' : 'both writes carried the same value: nothing lost' },
            divergent ? 'divergent' : 'benign'),
          h('span', { class: 'ox-muted' }, '#' + c.id),
          h('span', { class: 'ox-mono', 'data-testid': 'conflict-store' }, c.store), '/', keyLink,
          h('span', { 'data-testid': 'conflict-reason', 'data-reason': c.reason },
            'winner ', h('b', { 'data-testid': 'conflict-winner-node' }, c.winner.node), ': ', REASONS[c.reason] || c.reason)),
        h('div', { class: 'ox-writes' },
          writeBlock('conflict-winner', 'won', 'ox-won', c.winner, c.winner_ms, c.winner_shown),
          writeBlock('conflict-loser', divergent ? 'lost' : 'lost (same value)', 'ox-lost', c.loser, c.loser_ms, c.loser_shown)),
        reviewBlock(c));
      articles.set(c.id, e);
      return e;
    }

    function renderList() {
      // Newest first; existing elements are moved, not rebuilt (an
      // expanded value stays expanded).
      const ids = [...items.keys()].sort((a, b) => b - a);
      for (const id of ids.slice(KEEP)) { items.delete(id); articles.get(id)?.remove(); articles.delete(id); }
      let before = list.firstChild;
      for (const id of ids.slice(0, KEEP)) {
        const e = articles.get(id) || article(items.get(id));
        if (e !== before) list.insertBefore(e, before); else before = before.nextSibling;
      }
      empty.hidden = items.size > 0;
      more.hidden = items.size < KEEP;
      more.textContent = `Showing the newest ${KEEP}; narrow the filters to see older ones.`;
    }

    // Reads every conflict after the cursor, a few pages at a time.
    async function loadNew() {
      if (busy || destroyed) return;
      busy = true;
      const mine = generation;
      let grew = false;
      try {
        for (let page = 0; page < MAX_PAGES; page++) {
          const r = await call('GET', '/conflicts?' + query(Object.assign({ since: cursor, limit: PAGE }, filters)));
          if (mine !== generation) return;  // the filters changed meanwhile
          for (const c of r.items || []) { items.set(c.id, c); grew = true; }
          // `next` is the last record the cloud scanned, matching or not:
          // a filtered page may be empty with more to come.
          const next = Number(r.next);
          if (!(Number.isFinite(next) && next > cursor)) break;
          cursor = next;
        }
        renderList();
        setState('ok');
        container.dataset.loads = String(++loads);
        if (grew || Date.now() - statsAt > STATS_EVERY_MS) loadStats();
      } catch (e) {
        if (mine === generation) failed(e);
      } finally {
        if (mine === generation) busy = false;
      }
    }

    async function loadStats() {
      statsAt = Date.now();
      let s;
      try {
        s = await call('GET', '/conflicts/stats?' + query(Object.assign({ bucket_s: bucket }, filters)));
      } catch (e) {
        statsNote.textContent = 'counts: ' + (e.message || e); statsNote.hidden = false;
        return;
      }
      const total = (label, n, testid, cls) => h('span', { class: cls }, label + ' ', h('b', { 'data-testid': testid }, String(n ?? 0)));
      totals.replaceChildren(
        total('conflicts', s.total, 'stat-total'), total('benign', s.benign, 'stat-benign', 'ox-benign'),
        total('divergent', s.divergent, 'stat-divergent', 'ox-divergent'), total('reviewed', s.reviewed, 'stat-reviewed', 'ox-reviewed'));
      statsNote.hidden = s.complete !== false;
      statsNote.textContent = s.complete === false
        ? `Counts cover the most recent ${s.window ?? 'few'} conflicts only.` : '';
      byStore.replaceChildren(...(s.by_store || []).map(r => {
        const tr = h('tr', { 'data-store': r.store, title: 'filter by this store' },
          h('td', { class: 'ox-mono' }, r.store), h('td', { class: 'ox-num' }, String(r.count)),
          h('td', { class: 'ox-num ox-benign' }, String(r.benign ?? '')), h('td', { class: 'ox-num ox-divergent' }, String(r.divergent ?? '')));
        tr.addEventListener('click', () => {
          storeInput.querySelector('input').value = r.store; filters.store = r.store; reload();
        });
        return tr;
      }));
      byPair.replaceChildren(...(s.by_pair || []).map(r => h('tr', { 'data-pair': (r.nodes || []).join('|') },
        h('td', { class: 'ox-mono' }, (r.nodes || []).join(' ↔ ')), h('td', { class: 'ox-num' }, String(r.count)))));
      const points = s.over_time || [];
      const max = Math.max(1, ...points.map(p => p.count));
      chart.replaceChildren(...points.map(p => h('div', { class: 'ox-bar', 'data-testid': 'over-time-bar', 'data-count': p.count,
        'data-ms': p.at_ms, title: `${fmtTime(p.at_ms)}: ${p.count}`, style: `height: ${Math.max(2, 100 * p.count / max)}%` })));
      const label = ms => fmtTime(ms).slice(0, -4);  // bucket starts: no milliseconds
      const first = points[0], last = points[points.length - 1];
      fill(axis, points.length
        ? [h('span', null, label(first.at_ms)), h('span', null, `max ${max} per ${bucketName(s.bucket_s || bucket)}`),
          last !== first ? h('span', null, label(last.at_ms)) : null]
        : [h('span', null, 'no conflicts in this view')]);
    }

    // -- a key's history
    async function showHistory(store, key) {
      history.hidden = false;
      history.dataset.store = store; history.dataset.key = key; history.dataset.state = 'loading';
      const close = h('button', { type: 'button', 'data-testid': 'history-close', onclick: () => { history.hidden = true; } }, 'close');
      const title = h('div', { class: 'ox-head' }, h('h3', null, 'History of ', h('span', { class: 'ox-mono' }, `${store}/${key}`)), close);
      fill(history, title, h('p', { class: 'ox-muted' }, 'loading…'));
      let r;
      try {
        r = await call('GET', '/history?' + query({ store, key, limit: 100 }));
      } catch (e) {
        if (history.dataset.key !== key || history.dataset.store !== store) return;
        history.dataset.state = 'error';
        fill(history, title, h('p', { class: 'ox-note', 'data-testid': 'history-error' }, e.message || String(e)));
        return;
      }
      if (history.dataset.key !== key || history.dataset.store !== store) return;  // another key was opened since
      const lost = r.lost || [];
      const versions = (r.versions || []).slice().sort((a, b) => cmpVersion(a.version, b.version));
      const rows = versions.map(v => {
        const isCurrent = r.current && sameVersion(r.current.version, v.version);
        const beaten = lost.filter(l => sameVersion(l.lost_to, v.version));
        return h('div', { class: 'ox-version' + (isCurrent ? ' ox-current' : ''), 'data-testid': 'history-version',
          'data-hlc': v.version.hlc, 'data-node': v.version.node, 'data-current': String(!!isCurrent) },
          writeBlock('history-write', isCurrent ? 'current' : 'version', '', v.version, v.at_ms, v.shown),
          h('div', { class: 'ox-lost-list' }, beaten.map(l => lostBlock(l))));
      });
      // Lost writes whose winner is outside the versions read (older than the window).
      const placed = new Set(versions.map(v => `${v.version.hlc}/${v.version.node}`));
      const orphans = lost.filter(l => !l.lost_to || !placed.has(`${l.lost_to.hlc}/${l.lost_to.node}`));
      const w = r.window || {};
      history.dataset.state = 'ok';
      fill(history, title,
        r.current ? null : h('p', { class: 'ox-muted', 'data-testid': 'history-no-current' }, 'The cloud holds no value for this key.'),
        w.complete === false ? h('p', { class: 'ox-note ox-muted', 'data-testid': 'history-window' },
          `Only the most recent changes were read (${w.changes_scanned ?? '?'} changes, ${w.conflicts_scanned ?? '?'} conflicts): older versions may be missing.`) : null,
        w.truncated === true ? h('p', { class: 'ox-note', 'data-testid': 'history-truncated' },
          `Showing the newest ${versions.length} ${versions.length === 1 ? 'version' : 'versions'} and ${lost.length} lost ` +
          `${lost.length === 1 ? 'write' : 'writes'}: older ones the cloud found are past the answer budget and left out.`) : null,
        rows.length ? null : h('p', { class: 'ox-muted' }, 'No versions in the changes read.'),
        ...rows,
        orphans.length ? h('div', { class: 'ox-lost-list', 'data-testid': 'history-orphans' },
          h('h3', null, 'Lost to versions outside this window'), orphans.map(l => lostBlock(l))) : null);
    }
    function lostBlock(l) {
      const link = h('button', { type: 'button', class: 'ox-link', 'data-testid': 'history-conflict-link', 'data-conflict-id': l.conflict },
        'conflict #' + l.conflict);
      link.addEventListener('click', () => focusConflict(l.conflict));
      return h('div', { 'data-testid': 'history-lost', 'data-conflict-id': l.conflict },
        writeBlock('history-lost-write', 'lost', 'ox-lost', l.version, l.at_ms, l.shown, link));
    }
    function focusConflict(id) {
      const e = articles.get(Number(id)) || articles.get(id);
      if (!e) { setState(container.dataset.state, `Conflict #${id} is not in the list as filtered.`, true); return; }
      e.scrollIntoView({ block: 'center' });
      e.classList.add('ox-flash');
      setTimeout(() => e.classList.remove('ox-flash'), 1500);
    }

    // -- lifecycle
    function reload() {
      generation++;
      cursor = 0; busy = false; statsAt = 0;
      items.clear(); articles.clear(); list.replaceChildren();
      loadNew();
    }
    function schedule() {
      if (destroyed || !(opts.pollMs > 0)) return;
      timer = setTimeout(async () => { await loadNew(); schedule(); }, opts.pollMs);
    }
    loadNew().then(schedule);

    return {
      refresh: reload,
      showHistory,
      destroy() { destroyed = true; clearTimeout(timer); root.replaceChildren(); },
    };
  }

  global.OutpostExplorer = { mount };
})(typeof window !== 'undefined' ? window : globalThis);
