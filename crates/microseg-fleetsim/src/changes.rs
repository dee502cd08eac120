//! One-rule policy changes applied through controller 0's REST API, each timed to the last
//! node's ack, overall and per controller (docs/FLEETSIM.md "What it measures").

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::phases::{until, Ctx};
use crate::report::{percentile, Change, Changes};

/// Milliseconds from `from` to `t`, when every node in question acked.
fn ms_after(t: Option<Instant>, from: Instant, all: bool) -> Option<f64> {
    t.filter(|_| all)
        .map(|t| t.saturating_duration_since(from).as_secs_f64() * 1e3)
}

/// The q-th percentile; a change some node never acked counts as infinitely slow.
fn pct(v: impl Iterator<Item = Option<f64>>, q: f64) -> Option<f64> {
    let v: Vec<f64> = v.map(|x| x.unwrap_or(f64::INFINITY)).collect();
    percentile(&v, q).filter(|x| x.is_finite())
}

pub async fn run(ctx: &Ctx<'_>, churn: &[watch::Sender<u64>]) -> Result<(), String> {
    let (args, fleet, n) = (ctx.args, ctx.fleet, ctx.args.nodes);
    let k_ctl = ctx.ctls.len();
    let changes_from = Instant::now();
    let churning = (args.churn > 0.0).then(|| {
        let per_s = args.churn / 100.0 * (n * args.workloads) as f64
            / crate::churn::per_step(args.workloads) as f64;
        tokio::spawn(drive_churn(churn.to_vec(), per_s))
    });
    let mut ch = Changes::default();
    // Per controller, per change: (from the answer, from the request sent).
    let mut by_ctl: Vec<Vec<(Option<f64>, Option<f64>)>> = vec![Vec::new(); k_ctl];
    let mut prev = fleet
        .acked
        .iter()
        .map(|a| a.load(Ordering::Acquire))
        .max()
        .unwrap_or(0);
    for k in 0..args.changes {
        let body = one_rule_policy(k);
        let sent = Instant::now();
        let revision = ctx.ctls[0].apply(&body).await?;
        let returned = Instant::now();
        let limit = Duration::from_secs_f64(args.change_timeout);
        until(limit, || {
            fleet
                .acked
                .iter()
                .all(|a| a.load(Ordering::Acquire) >= revision)
        })
        .await;
        // Per controller: the last ack, the nodes that acked; overall: the last receipt.
        let mut last: Vec<Option<Instant>> = vec![None; k_ctl];
        let mut acked = vec![0usize; k_ctl];
        let mut last_rx: Option<Instant> = None;
        let (mut total, mut per_max) = (0u64, 0u64);
        for (i, l) in fleet.logs.iter().enumerate() {
            let c = ctx.controller_of(i);
            let l = l.lock().unwrap();
            if let Some(t) = l
                .revisions
                .iter()
                .filter(|r| r.revision >= revision)
                .find_map(|r| r.acked)
            {
                acked[c] += 1;
                last[c] = Some(last[c].map_or(t, |x| x.max(t)));
            }
            if let Some(r) = l.revisions.iter().find(|r| r.revision >= revision) {
                last_rx = Some(last_rx.map_or(r.received, |x| x.max(r.received)));
            }
            let b: u64 = l
                .revisions
                .iter()
                .filter(|r| r.revision > prev && r.revision <= revision && !r.full)
                .map(|r| r.bytes)
                .sum();
            total += b;
            per_max = per_max.max(b);
        }
        let all = acked.iter().sum::<usize>() == n;
        let last_all = last.iter().flatten().max().copied();
        for (c, each) in by_ctl.iter_mut().enumerate() {
            let done = acked[c] == ctx.nodes_of(c);
            each.push((
                ms_after(last[c], returned, done),
                ms_after(last[c], sent, done),
            ));
        }
        let several = k_ctl > 1;
        ch.items.push(Change {
            revision,
            apply_ms: (returned - sent).as_secs_f64() * 1e3,
            last_ack_ms: ms_after(last_all, returned, all),
            last_ack_from_sent_ms: ms_after(last_all, sent, all),
            last_receive_ms: ms_after(last_rx, returned, all),
            nodes_acked: acked.iter().sum(),
            bytes_total: total,
            bytes_per_node_max: per_max,
            last_ack_by_controller_ms: if several {
                by_ctl.iter().map(|v| v[k].0).collect()
            } else {
                Vec::new()
            },
            nodes_acked_by_controller: if several { acked } else { Vec::new() },
        });
        prev = revision;
        ctx.report.lock().unwrap().changes = Some(ch.clone());
    }
    if let Some(task) = churning {
        task.abort();
        churn_report(ctx, churn, changes_from);
    }
    ch.last_ack_p50_ms = pct(ch.items.iter().map(|c| c.last_ack_ms), 0.5);
    ch.last_ack_p99_ms = pct(ch.items.iter().map(|c| c.last_ack_ms), 0.99);
    ch.last_ack_from_sent_p50_ms = pct(ch.items.iter().map(|c| c.last_ack_from_sent_ms), 0.5);
    ch.last_ack_from_sent_p99_ms = pct(ch.items.iter().map(|c| c.last_ack_from_sent_ms), 0.99);
    let applies: Vec<f64> = ch.items.iter().map(|c| c.apply_ms).collect();
    ch.apply_p50_ms = percentile(&applies, 0.5);
    let k = ch.items.len().max(1) as u64;
    ch.bytes_total_mean = ch.items.iter().map(|c| c.bytes_total).sum::<u64>() / k;
    ch.bytes_per_node_mean = ch.bytes_total_mean / n.max(1) as u64;
    // Lets the sampler take one more sample after the stretch.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let used = ctx.usage(changes_from, Instant::now());
    (ch.peak_rss_bytes, ch.cpu_s) = used[0];
    ctx.report.lock().unwrap().changes = Some(ch);
    ctx.per_controller(|c, f| {
        let v = &by_ctl[c];
        f.last_ack_p50_ms = pct(v.iter().map(|x| x.0), 0.5);
        f.last_ack_p99_ms = pct(v.iter().map(|x| x.0), 0.99);
        f.last_ack_from_sent_p50_ms = pct(v.iter().map(|x| x.1), 0.5);
        f.last_ack_from_sent_p99_ms = pct(v.iter().map(|x| x.1), 0.99);
        (f.changes_rss_peak_bytes, f.changes_cpu_s) = used[c];
    });
    Ok(())
}

/// What the churn did while the changes ran (docs/FLEETSIM.md "Churn").
fn churn_report(ctx: &Ctx<'_>, churn: &[watch::Sender<u64>], from: Instant) {
    let (fleet, n) = (ctx.fleet, ctx.args.nodes);
    let secs = from.elapsed().as_secs_f64();
    let mut bytes = 0u64;
    let mut revs = 0usize;
    for l in &fleet.logs {
        let l = l.lock().unwrap();
        for r in l.revisions.iter().filter(|r| r.received >= from) {
            bytes += r.bytes;
            revs += 1;
        }
    }
    let steps: u64 = churn.iter().map(|t| *t.borrow()).sum();
    ctx.report.lock().unwrap().churn = Some(crate::report::ChurnReport {
        percent_per_s: ctx.args.churn,
        seconds: secs,
        steps,
        workloads_replaced: steps * crate::churn::per_step(ctx.args.workloads) as u64,
        reports_ok: fleet.churn_reports.load(Ordering::Relaxed),
        reports_failed: fleet.churn_failed.load(Ordering::Relaxed),
        bytes_per_node_per_s: bytes as f64 / n.max(1) as f64 / secs,
        revisions_per_node: revs as f64 / n.max(1) as f64,
    });
}

/// Asks `per_s` churn steps a second of the nodes in turn, ten times a second.
async fn drive_churn(nodes: Vec<watch::Sender<u64>>, per_s: f64) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let (mut owed, mut next) = (0.0, 0usize);
    loop {
        tick.tick().await;
        owed += per_s / 10.0;
        while owed >= 1.0 && !nodes.is_empty() {
            nodes[next % nodes.len()].send_modify(|s| *s += 1);
            next += 1;
            owed -= 1.0;
        }
    }
}

/// The k-th change: one Policy whose one rule's port moves (docs/FLEETSIM.md).
fn one_rule_policy(k: usize) -> String {
    serde_json::json!({
        "apiVersion": "microseg.io/v1",
        "kind": "Policy",
        "metadata": {"name": "fleetsim"},
        "spec": {
            "selector": {"matchLabels": {"app": "app0"}},
            "ingress": [{
                "action": "allow",
                "from": [{"selector": {"matchLabels": {"app": "app1"}}}],
                "ports": [{"protocol": "TCP", "port": 1000 + k}]
            }]
        }
    })
    .to_string()
}
