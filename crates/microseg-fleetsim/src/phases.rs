//! The run: start the fleet, let it settle, apply one-rule changes, storm
//! (docs/FLEETSIM.md says what each figure means).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::bad::{self, BadKind, BadLog};
use crate::controller::{sampler, usage, Controller, Sample};
use crate::report::{percentile, BadReport, Change, Changes, Report, Startup, Storm};
use crate::sim::{self, Fleet, NodeSpec, SimConfig};
use crate::Args;

/// Waits (polling) until `done` holds or `limit` passes; the instant it held.
async fn until(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Instant> {
    let end = Instant::now() + limit;
    loop {
        if done() {
            return Some(Instant::now());
        }
        if Instant::now() > end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until every node acked the same revision and nothing moved for 1 s: when that
/// state began.
async fn in_sync(fleet: &Fleet, limit: Duration) -> Option<Instant> {
    let end = Instant::now() + limit;
    let mut since: Option<(Instant, u64)> = None;
    loop {
        let first = fleet.acked[0].load(Ordering::Acquire);
        let same = first > 0
            && fleet
                .acked
                .iter()
                .all(|a| a.load(Ordering::Acquire) == first);
        since = match (same, since) {
            (true, Some((t, r))) if r == first => Some((t, r)),
            (true, _) => Some((Instant::now(), first)),
            (false, _) => None,
        };
        if let Some((t, _)) = since {
            if t.elapsed() >= Duration::from_secs(1) {
                return Some(t);
            }
        }
        if Instant::now() > end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn errors_since(fleet: &Fleet, t: Instant) -> (usize, Vec<String>) {
    let mut all: Vec<String> = Vec::new();
    let mut n = 0;
    for (i, l) in fleet.logs.iter().enumerate() {
        for (at, e) in &l.lock().unwrap().errors {
            if *at >= t {
                n += 1;
                if all.len() < 5 {
                    all.push(format!("n{i}: {e}"));
                }
            }
        }
    }
    (n, all)
}

fn rss(samples: &Mutex<Vec<Sample>>, from: Instant, to: Instant) -> (Option<u64>, Option<f64>) {
    let s = samples.lock().unwrap();
    usage(&s, from, to).map_or((None, None), |(r, c)| (Some(r), Some(c)))
}

pub async fn run(
    args: &Args,
    ctl: Arc<Controller>,
    report: Arc<Mutex<Report>>,
) -> Result<(), String> {
    let samples = ctl.pid.map(|_| sampler(ctl.pid_now.clone()));
    let n = args.nodes;
    let fleet = Arc::new(Fleet::new(n));
    let (storm_tx, storm_rx) = watch::channel(0u64);
    let cfg = Arc::new(SimConfig {
        url: format!("http://{}", ctl.addr),
        flow_rate: args.flow_rate,
        call_timeout: (args.call_timeout > 0.0).then(|| Duration::from_secs_f64(args.call_timeout)),
        resume: !args.no_resume,
    });
    let start = Instant::now();
    let (churn_tx, churn_rx): (Vec<_>, Vec<_>) = (0..n).map(|_| watch::channel(0u64)).unzip();
    let tasks: Vec<_> = (0..n)
        .zip(churn_rx)
        .map(|(i, churn)| {
            let name = format!("sim-{i}");
            let spec = NodeSpec {
                index: i,
                token: microseg_controller::node_token::node_token(&ctl.agent_token, &name),
                name,
                workloads: sim::workloads(i, args.workloads),
                churn,
            };
            tokio::spawn(sim::run(cfg.clone(), spec, fleet.clone(), storm_rx.clone()))
        })
        .collect();
    let bad_logs: Vec<_> = args
        .bad
        .iter()
        .map(|&kind| (kind, Arc::new(Mutex::new(BadLog::default()))))
        .collect();
    let bad_tasks = bad_logs.iter().map(|(kind, log)| {
        let token = microseg_controller::node_token::node_token(&ctl.agent_token, kind.node_name());
        tokio::spawn(bad::run(cfg.clone(), *kind, token, log.clone()))
    });
    let tasks: Vec<_> = tasks.into_iter().chain(bad_tasks).collect();
    let _abort = AbortAll(tasks);
    let result = phases(
        args,
        &ctl,
        &fleet,
        (&storm_tx, &churn_tx),
        start,
        &report,
        samples.as_ref().map(|s| &*s.0),
    )
    .await;
    let bad = bad_report(&ctl, &bad_logs).await;
    let mut r = report.lock().unwrap();
    r.bad = bad;
    r.connects = fleet.connects.load(Ordering::Relaxed);
    r.flows_sent = fleet.flows_sent.load(Ordering::Relaxed);
    r.db_bytes = ctl.db_bytes();
    r.log_bytes = ctl.log_bytes();
    if let Some((s, task)) = samples {
        task.abort();
        r.peak_rss_bytes = s.lock().unwrap().iter().map(|x| x.rss_bytes).max();
    }
    result
}

/// Each bad node's log, its `GET /v1/nodes` entry and the `/metrics` lines naming it.
async fn bad_report(ctl: &Controller, logs: &[(BadKind, Arc<Mutex<BadLog>>)]) -> Vec<BadReport> {
    if logs.is_empty() {
        return Vec::new();
    }
    let nodes = ctl.get("/v1/nodes").await.and_then(|b| {
        serde_json::from_str::<serde_json::Value>(&b).map_err(|e| format!("/v1/nodes: {e}"))
    });
    let metrics = ctl.get("/metrics").await.unwrap_or_else(|e| e);
    logs.iter()
        .map(|(kind, log)| {
            let name = kind.node_name();
            let status = nodes.clone().map(|v| {
                v["items"]
                    .as_array()
                    .and_then(|a| a.iter().find(|n| n["name"] == name).cloned())
            });
            let label = format!("node=\"{name}\"");
            BadReport {
                kind: *kind,
                node: name.into(),
                log: log.lock().unwrap().clone(),
                status,
                metrics: metrics
                    .lines()
                    .filter(|l| l.contains(&label))
                    .map(String::from)
                    .collect(),
            }
        })
        .collect()
}

struct AbortAll(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortAll {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

async fn phases(
    args: &Args,
    ctl: &Controller,
    fleet: &Fleet,
    // The storm's signal, and each node's churn steps.
    (storm, churn): (&watch::Sender<u64>, &[watch::Sender<u64>]),
    start: Instant,
    report: &Mutex<Report>,
    samples: Option<&Mutex<Vec<Sample>>>,
) -> Result<(), String> {
    let n = args.nodes;
    let secs = |t: Instant| t.duration_since(start).as_secs_f64();
    let usage_of = |a: Instant, b: Instant| samples.map_or((None, None), |s| rss(s, a, b));
    let startup_limit = Duration::from_secs_f64(args.startup_timeout);
    let full = until(startup_limit, || {
        fleet.fulls.iter().all(|f| f.load(Ordering::Acquire) > 0)
    })
    .await;
    let synced = match full {
        Some(_) => in_sync(fleet, startup_limit.saturating_sub(start.elapsed())).await,
        None => None,
    };
    let end = Instant::now();
    let mut st = Startup {
        nodes_with_state: fleet
            .fulls
            .iter()
            .filter(|f| f.load(Ordering::Acquire) > 0)
            .count(),
        all_full_state_s: full.map(secs),
        all_in_sync_s: synced.map(secs),
        revision: fleet
            .acked
            .iter()
            .map(|a| a.load(Ordering::Acquire))
            .max()
            .unwrap_or(0),
        ..Default::default()
    };
    let (mut fulls, mut totals, mut revs) = (Vec::new(), Vec::new(), 0usize);
    for l in &fleet.logs {
        let l = l.lock().unwrap();
        if let Some(f) = l.revisions.iter().find(|r| r.full) {
            fulls.push(f.bytes);
        }
        totals.push(l.revisions.iter().map(|r| r.bytes).sum::<u64>());
        revs += l.revisions.len();
    }
    st.full_state_bytes_per_node_mean = fulls.iter().sum::<u64>() / fulls.len().max(1) as u64;
    st.bytes_per_node_mean = totals.iter().sum::<u64>() / n.max(1) as u64;
    st.bytes_per_node_max = totals.iter().copied().max().unwrap_or(0);
    st.revisions_per_node_mean = revs as f64 / n.max(1) as f64;
    (st.errors, st.first_errors) = errors_since(fleet, start);
    (st.peak_rss_bytes, st.cpu_s) = usage_of(start, end);
    let ok = synced.is_some();
    report.lock().unwrap().startup = Some(st);
    if !ok {
        return Err("the fleet did not get in sync within --startup-timeout".into());
    }

    // Idle: 2 s with nothing to do.
    let idle_from = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (idle_rss, idle_cpu) = usage_of(idle_from, Instant::now());
    {
        let mut r = report.lock().unwrap();
        r.idle_rss_bytes = idle_rss;
        r.idle_cpu_percent = idle_cpu.map(|c| 100.0 * c / idle_from.elapsed().as_secs_f64());
    }

    let changes_from = Instant::now();
    let churning = (args.churn > 0.0).then(|| {
        let per_s = args.churn / 100.0 * (n * args.workloads) as f64
            / crate::churn::per_step(args.workloads) as f64;
        let txs: Vec<_> = churn.to_vec();
        tokio::spawn(drive_churn(txs, per_s))
    });
    let mut ch = Changes::default();
    let mut prev = fleet
        .acked
        .iter()
        .map(|a| a.load(Ordering::Acquire))
        .max()
        .unwrap_or(0);
    for k in 0..args.changes {
        let body = one_rule_policy(k);
        let sent = Instant::now();
        let revision = ctl.apply(&body).await?;
        let returned = Instant::now();
        let limit = Duration::from_secs_f64(args.change_timeout);
        until(limit, || {
            fleet
                .acked
                .iter()
                .all(|a| a.load(Ordering::Acquire) >= revision)
        })
        .await;
        let mut last: Option<Instant> = None;
        let mut last_rx: Option<Instant> = None;
        let (mut acked, mut total, mut per_max) = (0, 0u64, 0u64);
        for l in &fleet.logs {
            let l = l.lock().unwrap();
            if let Some(t) = l
                .revisions
                .iter()
                .filter(|r| r.revision >= revision)
                .find_map(|r| r.acked)
            {
                acked += 1;
                last = Some(last.map_or(t, |x| x.max(t)));
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
        ch.items.push(Change {
            revision,
            apply_ms: (returned - sent).as_secs_f64() * 1e3,
            last_ack_ms: last
                .filter(|_| acked == n)
                .map(|t| t.saturating_duration_since(returned).as_secs_f64() * 1e3),
            last_ack_from_sent_ms: last
                .filter(|_| acked == n)
                .map(|t| t.saturating_duration_since(sent).as_secs_f64() * 1e3),
            last_receive_ms: last_rx
                .filter(|_| acked == n)
                .map(|t| t.saturating_duration_since(returned).as_secs_f64() * 1e3),
            nodes_acked: acked,
            bytes_total: total,
            bytes_per_node_max: per_max,
        });
        prev = revision;
        report.lock().unwrap().changes = Some(ch.clone());
    }
    if let Some(task) = churning {
        task.abort();
        let to = Instant::now();
        let secs = (to - changes_from).as_secs_f64();
        let mut bytes = 0u64;
        let mut revs = 0usize;
        for l in &fleet.logs {
            let l = l.lock().unwrap();
            for r in l.revisions.iter().filter(|r| r.received >= changes_from) {
                bytes += r.bytes;
                revs += 1;
            }
        }
        let steps: u64 = churn.iter().map(|t| *t.borrow()).sum();
        report.lock().unwrap().churn = Some(crate::report::ChurnReport {
            percent_per_s: args.churn,
            seconds: secs,
            steps,
            workloads_replaced: steps * crate::churn::per_step(args.workloads) as u64,
            reports_ok: fleet.churn_reports.load(Ordering::Relaxed),
            reports_failed: fleet.churn_failed.load(Ordering::Relaxed),
            bytes_per_node_per_s: bytes as f64 / n.max(1) as f64 / secs,
            revisions_per_node: revs as f64 / n.max(1) as f64,
        });
    }
    // A change some node never acked counts as infinitely slow in the percentiles.
    let of = |f: fn(&Change) -> Option<f64>, q: f64| {
        let v: Vec<f64> = ch
            .items
            .iter()
            .map(|c| f(c).unwrap_or(f64::INFINITY))
            .collect();
        percentile(&v, q).filter(|x| x.is_finite())
    };
    ch.last_ack_p50_ms = of(|c| c.last_ack_ms, 0.5);
    ch.last_ack_p99_ms = of(|c| c.last_ack_ms, 0.99);
    ch.last_ack_from_sent_p50_ms = of(|c| c.last_ack_from_sent_ms, 0.5);
    ch.last_ack_from_sent_p99_ms = of(|c| c.last_ack_from_sent_ms, 0.99);
    let applies: Vec<f64> = ch.items.iter().map(|c| c.apply_ms).collect();
    ch.apply_p50_ms = percentile(&applies, 0.5);
    let k = ch.items.len().max(1) as u64;
    ch.bytes_total_mean = ch.items.iter().map(|c| c.bytes_total).sum::<u64>() / k;
    ch.bytes_per_node_mean = ch.bytes_total_mean / n.max(1) as u64;
    // Lets the sampler take one more sample after the stretch.
    tokio::time::sleep(Duration::from_millis(250)).await;
    (ch.peak_rss_bytes, ch.cpu_s) = usage_of(changes_from, Instant::now());
    report.lock().unwrap().changes = Some(ch);

    if let Some(at) = args.reconnect_storm_at {
        let wait = Duration::from_secs_f64(at).saturating_sub(start.elapsed());
        tokio::time::sleep(wait).await;
        let before: Vec<u64> = fleet
            .fulls
            .iter()
            .map(|f| f.load(Ordering::Acquire))
            .collect();
        let t = Instant::now();
        let mut restart_s = None;
        if args.storm_restart {
            // The links break as the controller stops; each node reconnects on its own.
            let took = tokio::task::block_in_place(|| ctl.restart())?;
            restart_s = Some(took.as_secs_f64());
        } else {
            storm.send_modify(|e| *e += 1);
        }
        let limit = startup_limit;
        let resynced = || {
            fleet
                .fulls
                .iter()
                .zip(&before)
                .filter(|(f, b)| f.load(Ordering::Acquire) > **b)
                .count()
        };
        let full = until(limit, || resynced() == n).await;
        let synced = match full {
            Some(_) => in_sync(fleet, limit.saturating_sub(t.elapsed())).await,
            None => None,
        };
        let mut s = Storm {
            at_s: secs(t),
            all_full_state_s: full.map(|x| (x - t).as_secs_f64()),
            all_in_sync_s: synced.map(|x| x.saturating_duration_since(t).as_secs_f64()),
            nodes_resynced: resynced(),
            restart_s,
            full_states: fleet
                .logs
                .iter()
                .filter(|l| {
                    let l = l.lock().unwrap();
                    l.revisions.iter().any(|r| r.full && r.received > t)
                })
                .count(),
            bytes_per_node_max: fleet
                .logs
                .iter()
                .map(|l| {
                    let l = l.lock().unwrap();
                    l.revisions
                        .iter()
                        .filter(|r| r.received > t)
                        .map(|r| r.bytes)
                        .sum::<u64>()
                })
                .max()
                .unwrap_or(0),
            ..Default::default()
        };
        (s.errors, s.first_errors) = errors_since(fleet, t);
        if let Some(r) = restart_s {
            // What failed once the controller listened again (before: refused, as expected).
            let up = t + Duration::from_secs_f64(r);
            let (n, first) = errors_since(fleet, up);
            s.errors_after_restart = Some(n);
            if n > 0 {
                s.first_errors = first;
            }
        }
        (s.peak_rss_bytes, s.cpu_s) = usage_of(t, Instant::now());
        report.lock().unwrap().storm = Some(s);
    }
    Ok(())
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
