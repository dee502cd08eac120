// The recommendations page (docs/UI.md): GET /v1/recommendations shows the proposed
// policies (YAML), their preview and diff against what is applied, and each applied
// recommended policy's state; Promote calls POST /v1/policies/NAME/promote.
'use strict';

(function () {
  const el = MS.el;
  // Said once after a promotion, on the page drawn again after it.
  let flash = null;

  const selectorText = (s) => {
    const parts = Object.entries((s && s.matchLabels) || {}).map(([k, v]) => `${k}=${v}`);
    for (const e of (s && s.matchExpressions) || []) parts.push(`${e.key} ${e.operator} ${(e.values || []).join(',')}`.trim());
    return parts.join(',') || 'any workload';
  };
  const peerText = (p) => (p.cidr ? p.cidr + (p.except ? ` except ${p.except.join(',')}` : '') : selectorText(p.selector));
  const portText = (p) => p.protocol + (p.port !== undefined ? '/' + p.port + (p.endPort !== undefined ? '-' + p.endPort : '') : '');
  // `ingress allow from app=web TCP/5432`.
  function ruleText(direction, r) {
    const peers = r.from || r.to || [];
    return `${direction} ${r.action} ${direction === 'ingress' ? 'from' : 'to'} ` +
      (peers.length ? peers.map(peerText).join(', ') : 'anywhere') + ' ' +
      ((r.ports || []).length ? r.ports.map(portText).join(', ') : 'any port');
  }

  async function promote(name, main) {
    const box = main.querySelector('#promote-result');
    box.replaceChildren();
    try {
      const r = await MS.api('policies/' + encodeURIComponent(name) + '/promote', {}, 'POST');
      flash = `${name} promoted to enforce (revision ${r.revision})`;
      MS.go('recommendations', Object.fromEntries(MS.params()));
    } catch (e) {
      box.append(MS.errorBox(e, 'promote-error'));
    }
  }

  function appliedTable(applied, main) {
    const rows = applied.map((a) => el('tr', { 'data-applied': a.name, 'data-state': a.state, 'data-mode': a.mode },
      el('td', {}, el('a', { href: MS.link('policies', { policy: a.name }) }, a.name)),
      el('td', {}, a.mode),
      el('td', {}, el('span', { class: 'state state-' + a.state }, a.state)),
      el('td', {}, MS.fmtTime(a.last_new_edge) || (a.proposed ? '' : 'none in the window')),
      el('td', { class: 'num' }, String(a.revision)),
      el('td', {}, a.mode === 'audit'
        ? el('button', { type: 'button', 'data-promote': a.name, onclick: () => promote(a.name, main) }, 'Promote to enforce')
        : '')));
    return el('table', { id: 'applied-table' },
      el('thead', {}, el('tr', {}, ['policy', 'mode', 'state', 'last new edge', 'revision', ''].map((h) => el('th', { scope: 'col', text: h })))),
      el('tbody', {}, rows));
  }

  function proposedCard(p) {
    const pv = p.preview || {};
    const d = p.diff;
    const changes = [
      ...d.added.map((c) => el('li', { 'data-diff': 'added', class: 'added' }, '+ ' + ruleText(c.direction, c.rule))),
      ...d.removed.map((c) => el('li', { 'data-diff': 'removed', class: 'removed' }, '- ' + ruleText(c.direction, c.rule))),
    ];
    const status = d.status === 'new' ? 'not applied: every rule is new'
      : d.status === 'unchanged' ? `applied (${d.applied_mode}) as proposed`
      : `applied (${d.applied_mode}); applying this changes it` + (d.selector_changed ? ' (selector or priority too)' : '');
    return el('section', { class: 'proposed', 'data-proposed': p.name, 'data-diff-status': d.status },
      el('h3', {}, p.name),
      el('p', { class: 'preview' }, 'Preview over the window: allows ',
        el('strong', { 'data-allowed': pv.allowed_connections }, String(pv.allowed_connections ?? 0)),
        ` observed connections (${pv.allowed_edges ?? 0} edges), would deny `,
        el('strong', { 'data-would-deny': pv.would_deny_connections }, String(pv.would_deny_connections ?? 0)),
        ` (${pv.newly_denied_edges ?? 0} edges the current policies allow).`),
      (pv.examples || []).length ? el('ul', { class: 'examples' }, pv.examples.map((x) => el('li', {}, 'would deny ' + x))) : '',
      el('p', { class: 'diff-status' }, 'Diff: ' + status),
      changes.length ? el('ul', { class: 'diff' }, changes) : '',
      el('details', { open: true }, el('summary', {}, 'YAML'), el('pre', { class: 'yaml' }, p.yaml)));
  }

  async function recommendations(main, params, alive) {
    const since = params.get('since') || '24h';
    const groupBy = params.get('group_by') || 'app';
    const form = el('form', { class: 'controls', id: 'recommend-form', onsubmit: (ev) => {
      ev.preventDefault();
      MS.go('recommendations', { since: form.elements.since.value, group_by: form.elements.group_by.value.trim() || undefined });
    } }, el('label', { for: 'recommend-since' }, 'Window'), MS.windowSelect('recommend-since', since),
    el('label', { for: 'recommend-group' }, 'Group by'), el('input', { id: 'recommend-group', name: 'group_by', value: groupBy, size: 12, spellcheck: 'false' }),
    el('button', { type: 'submit' }, 'Recommend'));
    main.append(el('p', { id: 'recommendations', class: 'muted' }, 'Policy recommendations from the observed flows, as ', el('code', {}, 'microseg recommend'),
      ' makes them: apply one in audit mode (', el('code', {}, 'microseg policy apply'), '), watch its would-be verdicts, and promote it to enforce once it is stable.'),
    form, el('div', { id: 'promote-result' }));
    if (flash) {
      main.querySelector('#promote-result').append(el('p', { id: 'promote-done', role: 'status' }, flash));
      flash = null;
    }
    const r = await MS.api('recommendations', { since, group_by: groupBy });
    if (!alive()) return;
    if (r.notes.length) main.append(el('ul', { id: 'recommend-notes', class: 'muted' }, r.notes.map((n) => el('li', {}, n))));
    main.append(el('h2', {}, 'Applied recommendations'),
      r.applied.length ? appliedTable(r.applied, main)
        : el('p', { class: 'muted' }, 'No applied policy is named recommended.*.'),
      el('p', { class: 'muted' }, `Learning: new paths still appear; stabilizing: none for half the quiet period (${r.quiet_seconds} s); stable: none for all of it.`),
      el('h2', {}, `Proposed policies (${r.proposed.length}), grouped by ${r.group_by.join(',')}, last ${r.since}`),
      el('div', { id: 'proposed-list' }, r.proposed.map(proposedCard)));
  }

  MS.pages.recommendations = { title: 'Recommendations', render: recommendations };
})();
