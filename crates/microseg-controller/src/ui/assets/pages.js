// The flow table, policies and nodes pages (docs/UI.md); recommendations: recommend.js.
'use strict';

(function () {
  const el = MS.el;
  const table = (id, head, body) =>
    el('table', { id }, el('thead', {}, el('tr', {}, head.map((h) => el('th', { scope: 'col', text: h })))), body);

  // --- Flows: the filters of GET /v1/flows, a table of records, and live follow. ---
  const FILTERS = [
    ['since', 'Since', '15m'],
    ['until', 'Until', ''],
    ['verdict', 'Verdict', ''],
    ['direction', 'Direction', ''],
    ['workload', 'Workload', ''],
    ['from', 'From (labels)', ''],
    ['to', 'To (labels)', ''],
    ['port', 'Port', ''],
    ['protocol', 'Protocol', ''],
    ['policy', 'Policy', ''],
    ['node', 'Node', ''],
    ['limit', 'Limit', '200'],
  ];
  const CHOICES = { verdict: ['allow', 'deny', 'log', 'audit'], direction: ['ingress', 'egress'] };
  const MAX_ROWS = 2000;
  const FOLLOW_MS = 2000;

  function filterField(name, label, value) {
    const id = 'filter-' + name;
    let input;
    if (CHOICES[name] && (value === '' || CHOICES[name].includes(value))) {
      input = el('select', { id, name }, el('option', { value: '' }, 'any'), CHOICES[name].map((c) => el('option', { value: c, selected: c === value }, c)));
    } else {
      input = el('input', { id, name, value, spellcheck: 'false', size: name === 'port' || name === 'limit' ? 6 : 12 });
    }
    return el('span', { class: 'field' }, el('label', { for: id }, label), input);
  }

  function flowRow(f) {
    return el('tr', { 'data-flow': '', 'data-verdict': f.verdict, 'data-node': f.node },
      el('td', {}, MS.fmtTime(f.time)),
      el('td', {}, f.node),
      el('td', {}, `${f.workload} (${f.direction})`),
      el('td', {}, MS.endpoint(f.src_workload, f.src_ip, f.src_port)),
      el('td', {}, MS.endpoint(f.dst_workload, f.dst_ip, f.dst_port)),
      el('td', {}, String(f.protocol)),
      el('td', {}, el('span', { class: 'badge verdict-' + f.verdict }, f.verdict),
        f.audit_verdict ? el('span', { class: 'muted' }, ` (audit: ${f.audit_verdict} by ${f.audit_policy || 'default'})`) : ''),
      el('td', {}, f.policy && f.policy !== 'default-deny' ? el('a', { href: MS.link('policies', { policy: f.policy }) }, f.policy) : f.policy || '(none: open)'),
      el('td', {}, MS.ruleText(f)),
      el('td', { class: 'num' }, String(f.packets)),
      el('td', { class: 'num' }, MS.fmtBytes(f.bytes)),
      el('td', {}, f.end ? 'ended' : 'open'));
  }

  async function flows(main, params, alive) {
    const values = Object.fromEntries(FILTERS.map(([n, , d]) => [n, params.has(n) ? params.get(n) : d]));
    const follow = params.get('follow') === '1';
    const form = el('form', { class: 'controls', id: 'flow-filters', onsubmit: (ev) => {
      ev.preventDefault();
      const q = {};
      for (const [n] of FILTERS) q[n] = form.elements[n].value.trim() || (n === 'since' ? '' : undefined);
      q.follow = form.elements.follow.checked ? '1' : undefined;
      MS.go('flows', q);
    } },
    FILTERS.map(([n, label]) => filterField(n, label, values[n])),
    el('span', { class: 'field' }, el('input', { type: 'checkbox', id: 'filter-follow', name: 'follow', checked: follow }), el('label', { for: 'filter-follow' }, 'Follow')),
    el('button', { type: 'submit', id: 'flow-apply' }, 'Apply'));
    main.append(form);
    const query = Object.fromEntries(Object.entries(values).filter(([, v]) => v !== ''));
    let page;
    try {
      page = await MS.api('flows', query);
    } catch (e) {
      if (alive()) main.append(MS.errorBox(e, 'flows-error'));
      return;
    }
    if (!alive()) return;
    // The API gives the newest records oldest first; the table shows newest first.
    const body = el('tbody', { id: 'flow-rows' }, [...page.items].reverse().map(flowRow));
    const count = el('p', { id: 'flow-count' });
    const setCount = () => (count.textContent = `${body.rows.length} flow record(s), newest first` + (follow ? ', following' : ''));
    setCount();
    const status = el('p', { id: 'follow-status', class: 'muted', 'aria-live': 'polite' });
    main.append(count, status,
      table('flow-table', ['time', 'node', 'judged at', 'source', 'destination', 'proto', 'verdict', 'policy', 'rule', 'packets', 'bytes', ''], body));
    if (!follow) return;
    // Follow: the records stored after the page's cursor, with the same filters, every
    // couple of seconds; errors are shown and retried, rows are capped.
    let cursor = page.cursor;
    let timer = null;
    let stopped = false;
    const tick = async () => {
      const q = { ...query, after: cursor };
      delete q.since; // the cursor says where to go on from
      try {
        const next = await MS.api('flows', q);
        if (stopped) return;
        cursor = next.cursor;
        for (const f of next.items) body.prepend(flowRow(f));
        while (body.rows.length > MAX_ROWS) body.lastElementChild.remove();
        setCount();
        status.className = 'muted';
        status.textContent = 'Updated ' + new Date().toLocaleTimeString();
      } catch (e) {
        if (stopped || e.status === 401 || e.status === 403) return;
        status.className = 'error';
        status.textContent = e.describe ? e.describe() : String(e);
      }
      if (!stopped) timer = setTimeout(tick, FOLLOW_MS);
    };
    timer = setTimeout(tick, FOLLOW_MS);
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }

  // --- Policies: selected workloads (the selector evaluated here) and per-rule counts. ---
  function matches(selector, labels) {
    const sel = selector || {};
    for (const [k, v] of Object.entries(sel.matchLabels || {})) if (labels[k] !== v) return false;
    for (const r of sel.matchExpressions || []) {
      const has = Object.prototype.hasOwnProperty.call(labels, r.key);
      const inValues = has && (r.values || []).includes(labels[r.key]);
      const ok = { In: inValues, NotIn: !inValues, Exists: has, DoesNotExist: !has }[r.operator];
      if (!ok) return false;
    }
    return true;
  }
  MS.selectorMatches = matches;

  function selectorText(sel) {
    const parts = Object.entries((sel && sel.matchLabels) || {}).map(([k, v]) => `${k}=${v}`);
    for (const r of (sel && sel.matchExpressions) || []) parts.push(`${r.key} ${r.operator}${r.values ? ' (' + r.values.join(', ') + ')' : ''}`);
    return parts.length ? parts.join(', ') : '(every workload)';
  }

  function peerText(p) {
    if (p.selector) return selectorText(p.selector);
    if (p.cidr) return p.cidr + (p.except ? ` except ${p.except.join(', ')}` : '');
    return JSON.stringify(p);
  }

  function portsText(r) {
    const ps = (r.ports || []).map((p) => `${p.protocol || 'any'}${p.port !== undefined ? '/' + p.port + (p.endPort ? '-' + p.endPort : '') : ''}`);
    return ps.length ? ps.join(', ') : 'any';
  }

  // Distinct connections per (direction, rule) among the policy's records in the window.
  function ruleCounts(records) {
    const seen = new Map();
    for (const f of records) {
      const key = f.direction + ':' + (f.rule === null ? '' : f.rule);
      const conn = [f.node, f.workload, f.direction, f.src_ip, f.src_port, f.dst_ip, f.dst_port, f.protocol, f.start].join('|');
      if (!seen.has(key)) seen.set(key, new Set());
      seen.get(key).add(conn);
    }
    return new Map([...seen].map(([k, s]) => [k, s.size]));
  }

  const COUNT_LIMIT = 10000;

  function policyCard(p, workloads, counts, since, countError) {
    const spec = p.spec || {};
    const name = p.metadata.name;
    const selected = workloads.filter((w) => matches(spec.selector, w.metadata.labels || {})).map((w) => w.metadata.name).sort();
    const rows = [];
    for (const dir of ['ingress', 'egress']) {
      if (!Array.isArray(spec[dir])) continue;
      if (spec[dir].length === 0) rows.push(el('tr', {}, el('td', {}, dir), el('td', { colspan: 5 }, '(no rules: everything in this direction is denied)')));
      spec[dir].forEach((r, i) => {
        const peers = r.from || r.to;
        const n = counts ? counts.get(dir + ':' + i) || 0 : '?';
        rows.push(el('tr', { 'data-rule': `${dir}:${i}` },
          el('td', {}, `${dir} ${i}`),
          el('td', {}, el('span', { class: 'badge verdict-' + r.action }, r.action)),
          el('td', {}, peers ? peers.map(peerText).join('; ') : 'any peer'),
          el('td', {}, portsText(r)),
          el('td', { class: 'num', 'data-count': n }, String(n))));
      });
    }
    const open = MS.params().get('policy') === name;
    return el('details', { class: 'policy', 'data-policy': name, open },
      el('summary', {}, el('strong', {}, name), ` ${spec.mode || 'enforce'}, priority ${spec.priority ?? 1000}, selects `,
        el('span', { class: 'selected-count' }, String(selected.length)), ' workload(s)'),
      el('p', {}, 'Selector: ', el('code', {}, selectorText(spec.selector))),
      el('p', { class: 'selects' }, 'Selects: ', selected.length ? selected.map((w, i) => [i ? ', ' : '', el('span', { 'data-workload': w }, w)]) : '(no workload now)'),
      table(null, ['rule', 'action', 'peers', 'ports', `connections, last ${since}`], el('tbody', {}, rows)),
      countError ? MS.errorBox(countError) : '');
  }

  async function policies(main, params, alive) {
    const since = params.get('since') || '15m';
    const form = el('form', { class: 'controls', onsubmit: (ev) => {
      ev.preventDefault();
      MS.go('policies', { since: form.elements.since.value, policy: params.get('policy') || undefined });
    } }, el('label', { for: 'policy-since' }, 'Counts over'), MS.windowSelect('policy-since', since), el('button', { type: 'submit' }, 'Show'));
    main.append(form,
      el('p', { class: 'muted' }, 'The workloads a policy selects are its selector (matchLabels, matchExpressions) evaluated here against the workloads\' current labels. Per-rule counts are distinct connections among the flow records that name the policy (GET /v1/flows?policy=NAME&since=…), grouped by direction and rule; at most ' + COUNT_LIMIT + ' records per policy are read.'));
    const [pols, wls] = await Promise.all([MS.api('policies'), MS.api('workloads')]);
    if (!alive()) return;
    const list = el('div', { id: 'policy-list' });
    main.append(el('p', { id: 'policy-count' }, `${pols.items.length} policies, revision ${pols.revision}`), list);
    const sorted = [...pols.items].sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : 1));
    const results = await Promise.all(sorted.map((p) =>
      MS.api('flows', { policy: p.metadata.name, since, limit: COUNT_LIMIT }).then((r) => [ruleCounts(r.items), null], (e) => [null, e])));
    if (!alive()) return;
    sorted.forEach((p, i) => list.append(policyCard(p, wls.items, results[i][0], since, results[i][1])));
    const wanted = list.querySelector(`[data-policy="${CSS.escape(params.get('policy') || '')}"]`);
    if (wanted) wanted.scrollIntoView();
  }

  // --- Nodes: each agent's enforced revision and lag. ---
  async function nodes(main) {
    const [n, st] = await Promise.all([MS.api('nodes'), MS.api('flows/status').catch(() => null)]);
    const rows = n.items.map((x) => el('tr', { 'data-node': x.name, class: x.inSync ? '' : 'lagging' },
      el('td', {}, x.name),
      el('td', {}, x.connected ? 'connected' : 'disconnected'),
      el('td', { class: 'num' }, String(x.revision)),
      el('td', { class: 'num' }, String(x.controllerRevision)),
      el('td', { class: 'num', 'data-lag': x.lag }, String(x.lag)),
      el('td', {}, x.inSync ? 'yes' : 'no'),
      el('td', {}, MS.fmtTime(x.lastAck)),
      el('td', {}, MS.fmtTime(x.lastSeen)),
      el('td', { class: x.error ? 'error' : '' }, x.error || '')));
    main.append(el('p', {}, `Controller revision ${n.revision}; ${n.items.length} node(s).`),
      table('node-table', ['node', 'link', 'enforced revision', 'controller revision', 'lag', 'in sync', 'last ack', 'last seen', 'error'], el('tbody', {}, rows)));
    if (st) {
      main.append(el('h2', {}, 'Flow record'),
        el('p', { id: 'flow-status' }, `${st.backend}: ${st.ok ? 'ok' : 'failing'}; ${st.stored} stored, ${st.queued} queued (of ${st.queue_bound}), ${st.dropped} dropped` + (st.error ? `; ${st.error}` : '')));
    }
  }

  MS.pages.flows = { title: 'Flows', render: flows };
  MS.pages.policies = { title: 'Policies', render: policies };
  MS.pages.nodes = { title: 'Nodes', render: nodes };
})();
