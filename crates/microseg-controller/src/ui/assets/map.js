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
    const xy = new Map();
    let col = 0;
    let height = 0;
    for (const l of layers) {
      const cols = Math.ceil(l.length / MAX_ROWS);
      const rows = Math.ceil(l.length / cols);
      height = Math.max(height, rows);
      l.forEach((id, i) => xy.set(id, { x: (col + Math.floor(i / rows)) * COL_W, y: (i % rows) * ROW_H, rows }));
      col += cols;
    }
    // Centre each column on the tallest.
    for (const p of xy.values()) p.y += ((height - p.rows) * ROW_H) / 2;
    const lonely = ids.filter((id) => !rank.has(id));
    const gridCols = Math.max(4, col, Math.ceil(Math.sqrt(lonely.length)));
    const top = height * ROW_H + (height ? ROW_H : 0);
    lonely.forEach((id, i) => xy.set(id, { x: (i % gridCols) * COL_W, y: top + Math.floor(i / gridCols) * ROW_H }));
    return xy;
  }

  // Denied and audit-would-deny edges are never thin: they must stand out.
  const width = (e) => Math.max(e.verdict === 'deny' || e.verdict === 'audit' ? 3 : 0, Math.min(12, 1.5 + 1.5 * Math.log2(1 + e.connections)));
  const short = (s) => (s.length > 26 ? s.slice(0, 12) + '…' + s.slice(-12) : s);

  // A curve from a to b, bent to its left by `bend`: the same pair in both directions,
  // and several verdicts of one pair, stay apart. Returns the path and its midpoint.
  function curve(a, b, bend) {
    if (a === b) {
      const d = `M ${a.x - 6} ${a.y - R} C ${a.x - 30} ${a.y - 40 - bend}, ${a.x + 30} ${a.y - 40 - bend}, ${a.x + 6} ${a.y - R - 2}`;
      return { d, mid: { x: a.x, y: a.y - R - 30 - bend * 0.75 } };
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
    return { d: `M ${s.x.toFixed(1)} ${s.y.toFixed(1)} Q ${c.x.toFixed(1)} ${c.y.toFixed(1)} ${e.x.toFixed(1)} ${e.y.toFixed(1)}`, mid };
  }

  function draw(g, xy, onEdge, onNode) {
    let maxX = 0;
    let maxY = 0;
    for (const p of xy.values()) {
      maxX = Math.max(maxX, p.x);
      maxY = Math.max(maxY, p.y);
    }
    const W = maxX + 2 * PAD + COL_W * 0.6;
    const H = maxY + 2 * PAD + 20;
    const svg = MS.svg('svg', {
      id: 'map',
      viewBox: `${-PAD} ${-PAD} ${W} ${H}`,
      width: Math.round(W),
      height: Math.round(H),
      role: 'group',
      'aria-label': `Service map: ${g.nodes.size} nodes, ${g.edges.length} edges`,
    });
    svg.append(
      MS.svg('defs', {},
        VERDICTS.map((v) =>
          MS.svg('marker', { id: 'arrow-' + v, class: 'arrow verdict-' + v, viewBox: '0 0 10 10', refX: 8, refY: 5, markerWidth: 5, markerHeight: 5, orient: 'auto-start-reverse' },
            MS.svg('path', { d: 'M 0 0 L 10 5 L 0 10 z' })))),
    );
    const edgeLayer = MS.svg('g', { class: 'edges' });
    const pairs = new Map();
    const sorted = [...g.edges].sort((a, b) => VERDICTS.indexOf(a.verdict) - VERDICTS.indexOf(b.verdict) || byName(a.src + a.dst, b.src + b.dst));
    for (const e of [...g.edges].sort((a, b) => byName(a.src + '>' + a.dst + VERDICTS.indexOf(a.verdict), b.src + '>' + b.dst + VERDICTS.indexOf(b.verdict)))) {
      const k = e.src + '->' + e.dst;
      e.bendIndex = pairs.get(k) || 0;
      pairs.set(k, e.bendIndex + 1);
    }
    for (const e of sorted) {
      const { d, mid } = curve(xy.get(e.src), xy.get(e.dst), 14 + 12 * e.bendIndex);
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
      MS.svg('path', { class: 'line', d, 'stroke-width': width(e).toFixed(1), 'marker-end': `url(#arrow-${e.verdict})` }));
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
        },
        MS.svg('title', { text: tip }),
        MS.svg('circle', { r: n.kind === 'group' ? R + 2 : R }),
        MS.svg('text', { x: R + 5, y: 4, text: short(id) + (n.kind === 'group' && members.length > 1 ? ` (${members.length})` : '') })),
      );
    }
    svg.append(edgeLayer, nodeLayer);
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
  async function showEdge(panel, e, group, since) {
    panel.replaceChildren(
      MS.el('h2', { id: 'edge-title' }, `${e.src} → ${e.dst}`),
      MS.el('p', {}, MS.el('span', { class: 'badge verdict-' + e.verdict, 'data-verdict': e.verdict }, e.verdict),
        ` ${e.connections} connection leg(s), ${e.packets} packets, ${MS.fmtBytes(e.bytes)} in the last ${since}`),
      table(['protocol/port', 'policy', 'legs', 'first seen', 'last seen'],
        e.rows.map((r) => ({ cells: [`${r.protocol}/${r.dst_port}`, r.policy || '(none: open)', r.connections, MS.fmtTime(r.first_seen), MS.fmtTime(r.last_seen)] }))),
    );
    const from = nodeQuery(group, e.src);
    const to = nodeQuery(group, e.dst);
    const q = { since, verdict: e.verdict, from: from.selector, to: to.selector, limit: 500 };
    panel.append(MS.el('p', {}, MS.el('a', { href: MS.link('flows', Object.fromEntries(Object.entries({ since, verdict: e.verdict, from: from.selector, to: to.selector }).filter(([, v]) => v))) }, 'Open in the flow table')));
    const status = MS.el('p', { class: 'muted' }, 'Loading flows…');
    panel.append(status);
    try {
      const page = await MS.api('flows', q);
      const mine = page.items.filter((f) => from.match(f.src_workload, f.src_labels, f.src_ip) && to.match(f.dst_workload, f.dst_labels, f.dst_ip));
      status.replaceWith(
        MS.el('h3', {}, `Flows (${mine.length}${page.items.length >= 500 ? '+' : ''})`),
        table(['time', 'judged at', 'source', 'destination', 'proto', 'policy', 'rule'],
          mine.slice(0, 100).map((f) => ({
            attrs: { 'data-flow': '', 'data-policy': f.policy || '', 'data-rule': f.rule === null ? '' : f.rule },
            cells: [MS.fmtTime(f.time), `${f.workload} (${f.direction}, ${f.node})`, MS.endpoint(f.src_workload, f.src_ip, f.src_port),
              MS.endpoint(f.dst_workload, f.dst_ip, f.dst_port), `${f.protocol}`, f.policy || '(none: open)', ruleText(f)],
          }))),
      );
    } catch (err) {
      status.replaceWith(MS.errorBox(err));
    }
  }
  const ruleText = (f) => (f.rule === null || f.rule === undefined ? (f.policy ? 'default' : '') : `${f.direction} rule ${f.rule}`);
  MS.ruleText = ruleText;

  // How to ask the API for one node's flows (a label selector for a group) and how to
  // recognise its end of a record.
  function nodeQuery(group, id) {
    return {
      selector: id.includes('=') && group && id.startsWith(group + '=') ? id : '',
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
          showEdge(panel, e, group, since);
        }, (n) => showNode(panel, n, g))),
        panel),
    );
  }

  MS.pages.map = { title: 'Service map', render };
  MS.mapLayout = layout; // for docs/UI.md's claims, and a console at hand
})();
