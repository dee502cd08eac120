// The service map (docs/UI.md): workloads, or groups of them by a label key, as nodes;
// the flow record's edges of a time window between them, one per verdict, coloured by
// it and as wide as their connections. The layout is computed in layers (who calls
// whom, left to right) and does not depend on chance: the same data draws the same map.
'use strict';

(function () {
  const VERDICTS = ['allow', 'log', 'audit', 'deny']; // drawing order: deny on top
  const COL_W = 230;
  const ROW_H = 40;
  const MAX_ROWS = 20; // a layer taller than this wraps into more columns
  const MAX_COLS = 10; // more columns wrap into a band below
  const MIN_BAND = 5; // a band holds at least this many
  const R = 9;
  const PAD = 40;

  const byName = (a, b) => (a < b ? -1 : a > b ? 1 : 0);

  // The map's node for an endpoint: `KEY=VALUE` for a workload with the grouping label,
  // else the workload's name, else the address.
  function nodeOf(group, workload, labels, ip) {
    if (!workload) return { id: ip, kind: 'address' };
    if (group && labels && Object.prototype.hasOwnProperty.call(labels, group)) {
      return { id: group + '=' + labels[group], kind: 'group', selector: group + '=' + labels[group] };
    }
    return { id: workload, kind: 'workload' };
  }

  // Nodes and edges from the workloads and the API's edges.
  function graph(group, workloads, apiEdges) {
    const nodes = new Map();
    const add = (n, member) => {
      if (!nodes.has(n.id)) nodes.set(n.id, { ...n, members: new Set() });
      if (member) nodes.get(n.id).members.add(member);
      return n.id;
    };
    for (const w of workloads) add(nodeOf(group, w.metadata.name, w.metadata.labels || {}), w.metadata.name);
    const edges = new Map();
    for (const e of apiEdges) {
      const s = add(nodeOf(group, e.src.workload, e.src.labels, e.src.ip), e.src.workload);
      const d = add(nodeOf(group, e.dst.workload, e.dst.labels, e.dst.ip), e.dst.workload);
      const key = s + '->' + d + '|' + e.verdict;
      if (!edges.has(key)) edges.set(key, { src: s, dst: d, verdict: e.verdict, connections: 0, packets: 0, bytes: 0, rows: [] });
      const g = edges.get(key);
      g.connections += e.connections;
      g.packets += e.packets;
      g.bytes += e.bytes;
      g.rows.push(e);
    }
    return { nodes, edges: [...edges.values()] };
  }

  // Layers by longest path over the edges with cycles broken by a depth-first search in
  // name order; then a few barycentre sweeps order each layer. Unconnected nodes go in
  // a grid below. Returns id -> {x, y}.
  function layout(nodeIds, edges) {
    const succ = new Map();
    const pred = new Map();
    for (const id of nodeIds) {
      succ.set(id, new Set());
      pred.set(id, new Set());
    }
    for (const e of edges) {
      if (e.src === e.dst) continue;
      succ.get(e.src).add(e.dst);
    }
    const ids = [...nodeIds].sort(byName);
    const hasIn = new Set(edges.filter((e) => e.src !== e.dst).map((e) => e.dst));
    const connected = ids.filter((id) => succ.get(id).size > 0 || hasIn.has(id));
    // Depth-first in name order: edges to a node on the stack close a cycle and are left out.
    const state = new Map();
    const order = [];
    const forward = new Map(connected.map((id) => [id, []]));
    const visit = (root) => {
      const stack = [[root, [...succ.get(root)].sort(byName), 0]];
      state.set(root, 1);
      while (stack.length) {
        const top = stack[stack.length - 1];
        if (top[2] < top[1].length) {
          const next = top[1][top[2]++];
          if (state.get(next) === 1) continue; // back edge
          forward.get(top[0]).push(next);
          if (!state.has(next)) {
            state.set(next, 1);
            stack.push([next, [...succ.get(next)].sort(byName), 0]);
          }
        } else {
          state.set(top[0], 2);
          order.push(top[0]);
          stack.pop();
        }
      }
    };
    for (const id of connected) if (!state.has(id)) visit(id);
    order.reverse(); // a topological order of the forward edges
    const rank = new Map(connected.map((id) => [id, 0]));
    for (const id of order) for (const n of forward.get(id)) rank.set(n, Math.max(rank.get(n), rank.get(id) + 1));
    for (const [id, ns] of forward) for (const n of ns) pred.get(n).add(id);
    const layers = [];
    for (const id of connected) (layers[rank.get(id)] = layers[rank.get(id)] || []).push(id);
    const pos = new Map();
    const place = () => layers.forEach((l) => l.forEach((id, i) => pos.set(id, i)));
    place();
    const bary = (id, nbrs) => {
      const ps = [...nbrs].filter((n) => pos.has(n)).map((n) => pos.get(n));
      return ps.length ? ps.reduce((a, b) => a + b, 0) / ps.length : pos.get(id);
    };
    for (let sweep = 0; sweep < 6; sweep++) {
      const down = sweep % 2 === 0;
      const seq = down ? layers.slice(1) : layers.slice(0, -1).reverse();
      for (const l of seq) {
        const key = new Map(l.map((id) => [id, bary(id, down ? pred.get(id) : forward.get(id))]));
        l.sort((a, b) => key.get(a) - key.get(b) || byName(a, b));
        l.forEach((id, i) => pos.set(id, i));
      }
    }
    // Columns: a layer taller than MAX_ROWS wraps into several. Columns past MAX_COLS
    // start a band below, so that deep chains stay within a screen's width.
    const columns = [];
    for (const l of layers) {
      const cols = Math.ceil(l.length / MAX_ROWS);
      const rows = Math.ceil(l.length / cols);
      for (let c = 0; c < cols; c++) columns.push(l.slice(c * rows, (c + 1) * rows));
    }
    const xy = new Map();
    let top = 0;
    const perBand = bandWidth(columns);
    for (let first = 0; first < columns.length; first += perBand) {
      const band = columns.slice(first, first + perBand);
      const height = Math.max(...band.map((c) => c.length));
      band.forEach((c, ci) => c.forEach((id, i) => xy.set(id, { x: ci * COL_W, y: top + (i + (height - c.length) / 2) * ROW_H })));
      top += (height + 1) * ROW_H;
    }
    const lonely = ids.filter((id) => !rank.has(id));
    const gridCols = Math.max(4, Math.min(perBand, columns.length), Math.ceil(Math.sqrt(lonely.length)));
    lonely.forEach((id, i) => xy.set(id, { x: (i % gridCols) * COL_W, y: top + Math.floor(i / gridCols) * ROW_H }));
    return xy;
  }

  // How many columns a band holds: all of up to MIN_BAND; else at most MAX_COLS, and of
  // those the count that brings the map's shape nearest a wide screen's (long chains of
  // small layers fold up).
  function bandWidth(columns) {
    let best = Math.max(1, Math.min(MAX_COLS, columns.length));
    let score = Infinity;
    for (let n = best; n >= MIN_BAND; n--) {
      let h = 0;
      for (let f = 0; f < columns.length; f += n) h += (Math.max(...columns.slice(f, f + n).map((c) => c.length)) + 1) * ROW_H;
      const s = Math.abs(Math.log((n * COL_W) / h / 1.8));
      if (s < score - 1e-9) {
        score = s;
        best = n;
      }
    }
    return best;
  }

  // Denied and audit-would-deny edges are never thin: they must stand out.
  // Widths grow with the logarithm of the connections, up to 7 for the busiest edge shown.
  const width = (e, most) =>
    Math.max(e.verdict === 'deny' || e.verdict === 'audit' ? 2.5 : 0, 1 + (6 * Math.log(1 + e.connections)) / Math.log(2 + most));
  const short = (s) => (s.length > 26 ? s.slice(0, 12) + '…' + s.slice(-12) : s);

  // A curve from a to b, bent to its left by `bend`: the same pair in both directions,
  // and several verdicts of one pair, stay apart. Returns the path and its midpoint.
  function curve(a, b, bend) {
    if (a === b) {
      const d = `M ${a.x - 6} ${a.y - R} C ${a.x - 30} ${a.y - 40 - bend}, ${a.x + 30} ${a.y - 40 - bend}, ${a.x + 6} ${a.y - R - 2}`;
      return { d, mid: { x: a.x, y: a.y - R - 30 - bend * 0.75 }, c: { x: a.x, y: a.y - 40 - bend } };
    }
    const dx = b.x - a.x;
    const dy = b.y - a.y;
    const len = Math.hypot(dx, dy);
    const nx = -dy / len;
    const ny = dx / len;
    const c = { x: (a.x + b.x) / 2 + nx * 2 * bend, y: (a.y + b.y) / 2 + ny * 2 * bend };
    const toward = (p, q, r) => {
      const l = Math.hypot(q.x - p.x, q.y - p.y) || 1;
      return { x: p.x + ((q.x - p.x) * r) / l, y: p.y + ((q.y - p.y) * r) / l };
    };
    const s = toward(a, c, R + 1);
    const e = toward(b, c, R + 4);
    const mid = { x: 0.25 * s.x + 0.5 * c.x + 0.25 * e.x, y: 0.25 * s.y + 0.5 * c.y + 0.25 * e.y };
    return { d: `M ${s.x.toFixed(1)} ${s.y.toFixed(1)} Q ${c.x.toFixed(1)} ${c.y.toFixed(1)} ${e.x.toFixed(1)} ${e.y.toFixed(1)}`, mid, c };
  }

  function draw(g, xy, onEdge, onNode) {
    const svg = MS.svg('svg', {
      id: 'map',
      role: 'group',
      'aria-label': `Service map: ${g.nodes.size} nodes, ${g.edges.length} edges`,
    });
    svg.append(
      MS.svg('defs', {},
        VERDICTS.map((v) =>
          MS.svg('marker', { id: 'arrow-' + v, class: 'arrow verdict-' + v, viewBox: '0 0 10 10', refX: 8, refY: 5, markerWidth: 3.5, markerHeight: 3.5, orient: 'auto-start-reverse' },
            MS.svg('path', { d: 'M 0 0 L 10 5 L 0 10 z' })))),
    );
    const edgeLayer = MS.svg('g', { class: 'edges' });
    const bounds = [...xy.values()];
    const most = Math.max(0, ...g.edges.map((e) => e.connections));
    const pairs = new Map();
    const sorted = [...g.edges].sort((a, b) => VERDICTS.indexOf(a.verdict) - VERDICTS.indexOf(b.verdict) || byName(a.src + a.dst, b.src + b.dst));
    for (const e of [...g.edges].sort((a, b) => byName(a.src + '>' + a.dst + VERDICTS.indexOf(a.verdict), b.src + '>' + b.dst + VERDICTS.indexOf(b.verdict)))) {
      const k = e.src + '->' + e.dst;
      e.bendIndex = pairs.get(k) || 0;
      pairs.set(k, e.bendIndex + 1);
    }
    for (const e of sorted) {
      const [a, b] = [xy.get(e.src), xy.get(e.dst)];
      // Longer edges bend more, so that edges along one row or column do not overlap.
      const { d, mid, c } = curve(a, b, 10 + 0.15 * Math.hypot(b.x - a.x, b.y - a.y) + 12 * e.bendIndex);
      bounds.push(e.src === e.dst ? c : mid); // a quadratic's apex is its midpoint
      e.mid = mid;
      const label = `${e.src} to ${e.dst}: ${e.verdict}, ${e.connections} connection${e.connections === 1 ? '' : 's'}`;
      const el = MS.svg('g', {
        class: 'edge verdict-' + e.verdict,
        'data-edge': e.src + '->' + e.dst,
        'data-verdict': e.verdict,
        'data-connections': e.connections,
        tabindex: 0,
        role: 'button',
        'aria-label': label,
        onclick: () => onEdge(e, el),
        onkeydown: (ev) => (ev.key === 'Enter' || ev.key === ' ') && onEdge(e, el),
      },
      MS.svg('title', { text: label }),
      MS.svg('path', { class: 'hit', d }),
      MS.svg('path', { class: 'line', d, 'stroke-width': width(e, most).toFixed(1), 'marker-end': `url(#arrow-${e.verdict})` }));
      edgeLayer.append(el);
    }
    const nodeLayer = MS.svg('g', { class: 'nodes' });
    const flagged = new Map();
    for (const e of g.edges) {
      if (e.verdict === 'deny' || e.verdict === 'audit') {
        for (const id of [e.src, e.dst]) if (flagged.get(id) !== 'deny') flagged.set(id, e.verdict);
      }
    }
    for (const id of [...g.nodes.keys()].sort(byName)) {
      const n = g.nodes.get(id);
      const p = xy.get(id);
      const members = [...n.members].sort(byName);
      const tip = n.kind === 'group' ? `${id}: ${members.length} workload(s): ${members.join(', ')}` : `${id} (${n.kind})`;
      nodeLayer.append(
        MS.svg('g', {
          class: `node kind-${n.kind}` + (flagged.has(id) ? ' has-' + flagged.get(id) : ''),
          'data-node': id,
          'data-kind': n.kind,
          transform: `translate(${p.x} ${p.y})`,
          tabindex: 0,
          role: 'button',
          'aria-label': tip,
          onclick: () => onNode(n),
          onkeydown: (ev) => (ev.key === 'Enter' || ev.key === ' ') && onNode(n),
        },
        MS.svg('title', { text: tip }),
        MS.svg('circle', { r: n.kind === 'group' ? R + 2 : R }),
        MS.svg('text', { x: R + 5, y: 4, text: short(id) + (n.kind === 'group' && members.length > 1 ? ` (${members.length})` : '') })),
      );
    }
    svg.append(edgeLayer, nodeLayer);
    // The view holds every node, its label, and every curve's apex.
    const xs = bounds.map((p) => p.x);
    const ys = bounds.map((p) => p.y);
    const x0 = Math.min(0, ...xs) - PAD;
    const y0 = Math.min(0, ...ys) - PAD;
    const W = Math.max(0, ...xs) + COL_W * 0.8 + PAD - x0;
    const H = Math.max(0, ...ys) + PAD - y0;
    svg.setAttribute('viewBox', `${x0.toFixed(0)} ${y0.toFixed(0)} ${W.toFixed(0)} ${H.toFixed(0)}`);
    svg.setAttribute('width', W.toFixed(0));
    svg.setAttribute('height', H.toFixed(0));
    return svg;
  }

  function legend() {
    const items = [
      ['allow', 'allowed'],
      ['log', 'allowed, logged'],
      ['audit', 'audit: would be denied'],
      ['deny', 'denied'],
    ];
    return MS.el('ul', { class: 'legend', 'aria-label': 'Edge colours' },
      items.map(([v, t]) => MS.el('li', { class: 'verdict-' + v }, MS.el('span', { class: 'swatch' }), t)));
  }

  function table(head, rows) {
    return MS.el('table', {}, MS.el('thead', {}, MS.el('tr', {}, head.map((h) => MS.el('th', { text: h })))),
      MS.el('tbody', {}, rows.map((r) => MS.el('tr', r.attrs || {}, r.cells.map((c) => MS.el('td', {}, c))))));
  }

  // The edge's rows from the API, then its flow records: which policy and rule decided.
  async function showEdge(panel, e, g, group, since) {
    panel.replaceChildren(
      MS.el('h2', { id: 'edge-title' }, `${e.src} → ${e.dst}`),
      MS.el('p', {}, MS.el('span', { class: 'badge verdict-' + e.verdict, 'data-verdict': e.verdict }, e.verdict),
        ` ${e.connections} connection leg(s), ${e.packets} packets, ${MS.fmtBytes(e.bytes)} in the last ${since}`),
      table(['protocol/port', 'policy', 'legs', 'first seen', 'last seen'],
        e.rows.map((r) => ({ cells: [`${r.protocol}/${r.dst_port}`, r.policy || '(none: open)', r.connections, MS.fmtTime(r.first_seen), MS.fmtTime(r.last_seen)] }))),
    );
    const from = nodeQuery(g, group, e.src);
    const to = nodeQuery(g, group, e.dst);
    // The server narrows by what it can (labels of a group, a workload at either end);
    // the records are then matched to the edge's two nodes here.
    const filters = { since, verdict: e.verdict, from: from.selector, to: to.selector, workload: from.workload || to.workload };
    const given = Object.fromEntries(Object.entries(filters).filter(([, v]) => v));
    const q = { ...given, limit: 500 };
    panel.append(MS.el('p', {}, MS.el('a', { href: MS.link('flows', given) }, 'Open in the flow table')));
    const status = MS.el('p', { class: 'muted' }, 'Loading flows…');
    panel.append(status);
    try {
      const page = await MS.api('flows', q);
      const mine = [...page.items].reverse().filter((f) => from.match(f.src_workload, f.src_labels, f.src_ip) && to.match(f.dst_workload, f.dst_labels, f.dst_ip));
      status.replaceWith(
        MS.el('h3', {}, `Flows (${mine.length}${page.items.length >= 500 ? '+' : ''})`),
        table(['time', 'policy', 'rule', 'judged at', 'source → destination'],
          mine.slice(0, 100).map((f) => ({
            attrs: { 'data-flow': '', 'data-policy': f.policy || '', 'data-rule': f.rule === null ? '' : f.rule },
            cells: [MS.fmtTime(f.time).slice(11), f.policy || '(none: open)', ruleText(f), `${f.direction} at ${f.node}`,
              `${MS.endpoint(f.src_workload, f.src_ip, f.src_port)} → ${MS.endpoint(f.dst_workload, f.dst_ip, f.dst_port)}`],
          }))),
      );
    } catch (err) {
      status.replaceWith(MS.errorBox(err));
    }
  }
  const ruleText = (f) => (f.rule === null || f.rule === undefined ? (f.policy ? 'default' : '') : `${f.direction} rule ${f.rule}`);
  MS.ruleText = ruleText;

  // How to ask the API for one node's flows (a label selector for a group, the name of
  // a workload) and how to recognise its end of a record.
  function nodeQuery(g, group, id) {
    const kind = g.nodes.get(id).kind;
    return {
      selector: kind === 'group' ? id : '',
      workload: kind === 'workload' ? id : '',
      match: (workload, labels, ip) => nodeOf(group, workload, labels, ip).id === id,
    };
  }

  function showNode(panel, n, g) {
    const edges = g.edges.filter((e) => e.src === n.id || e.dst === n.id);
    panel.replaceChildren(
      MS.el('h2', {}, n.id),
      MS.el('p', {}, n.kind === 'address' ? 'An address that is no workload.' : `Workloads: ${[...n.members].sort(byName).join(', ') || '(none)'}`),
      table(['edge', 'verdict', 'legs'], edges.map((e) => ({ cells: [`${e.src} → ${e.dst}`, e.verdict, e.connections] }))),
    );
  }

  async function render(main, params, alive) {
    const since = params.get('since') || '15m';
    const group = params.has('group') ? params.get('group') : 'app';
    const groupInput = MS.el('input', { id: 'map-group', name: 'group', value: group, list: 'label-keys', placeholder: '(none: each workload)', spellcheck: 'false' });
    const form = MS.el('form', { class: 'controls', id: 'map-controls', onsubmit: (ev) => {
      ev.preventDefault();
      // `group=` (empty) in the address: no grouping, each workload its own node.
      MS.go('map', { since: form.querySelector('#map-since').value, group: groupInput.value.trim() });
    } },
    MS.el('label', { for: 'map-since' }, 'Window'), MS.windowSelect('map-since', since),
    MS.el('label', { for: 'map-group' }, 'Group by label'), groupInput,
    MS.el('button', { type: 'submit' }, 'Show'));
    main.append(form);
    const [edges, workloads] = await Promise.all([MS.api('flows/edges', { since }), MS.api('workloads')]);
    if (!alive()) return;
    const keys = new Set();
    for (const w of workloads.items) for (const k of Object.keys(w.metadata.labels || {})) keys.add(k);
    main.append(MS.el('datalist', { id: 'label-keys' }, [...keys].sort(byName).map((k) => MS.el('option', { value: k }))));
    const g = graph(group, workloads.items, edges.items);
    const xy = layout([...g.nodes.keys()], g.edges);
    const panel = MS.el('aside', { id: 'details', 'aria-live': 'polite' }, MS.el('p', { class: 'muted' }, 'Click an edge for its flows and the policy and rule that decided them, or a node for its workloads.'));
    const counts = VERDICTS.map((v) => `${g.edges.filter((e) => e.verdict === v).length} ${v}`).join(', ');
    main.append(
      MS.el('p', { id: 'map-summary' }, `${g.nodes.size} nodes, ${g.edges.length} edges (${counts}) in the last ${since}` + (group ? `, grouped by ${group}` : '')),
      legend(),
      MS.el('div', { class: 'map-layout' },
        MS.el('div', { class: 'map-scroll' }, draw(g, xy, (e, el) => {
          for (const s of main.querySelectorAll('.edge.selected')) s.classList.remove('selected');
          el.classList.add('selected');
          // The address names the edge, so that a link opens the map with it selected.
          const q = MS.params();
          q.set('edge', e.src + '->' + e.dst);
          q.set('verdict', e.verdict);
          history.replaceState(null, '', '#/map?' + q);
          showEdge(panel, e, g, group, since);
        }, (n) => showNode(panel, n, g))),
        panel),
    );
    const chosen = g.edges.find((e) => e.src + '->' + e.dst === params.get('edge') && e.verdict === (params.get('verdict') || e.verdict));
    if (chosen) {
      const el = main.querySelector(`[data-edge="${CSS.escape(params.get('edge'))}"][data-verdict="${chosen.verdict}"]`);
      el.classList.add('selected');
      await showEdge(panel, chosen, g, group, since);
    }
  }

  MS.pages.map = { title: 'Service map', render };
  MS.mapLayout = layout; // for docs/UI.md's claims, and a console at hand
})();
