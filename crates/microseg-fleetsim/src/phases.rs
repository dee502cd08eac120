//! The run: start the fleet (split between the controllers), let it settle, apply one-rule
//! changes, storm (docs/FLEETSIM.md says what each figure means).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::bad::{self, BadKind, BadLog};
use crate::controller::{sampler, usage, Controller, Sample};
use crate::report::{BadReport, ControllerFigures, Report, Startup};
use crate::sim::{self, Fleet, NodeSpec, SimConfig};
use crate::Args;

/// Waits (polling) until `done` holds or `limit` passes; the instant it held.
pub async fn until(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Instant> {
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
pub async fn in_sync(fleet: &Fleet, limit: Duration) -> Option<Instant> {
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

pub fn errors_since(fleet: &Fleet, t: Instant) -> (usize, Vec<String>) {
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

/// What the phases share: the controllers (node i is linked to controller i mod K, changes
/// go through controller 0), the fleet, the report and each controller's samples.
pub struct Ctx<'a> {
    pub args: &'a Args,
    pub ctls: &'a [Arc<Controller>],
    pub fleet: &'a Fleet,
    pub start: Instant,
    pub report: &'a Mutex<Report>,
    samples: Vec<Option<Arc<Mutex<Vec<Sample>>>>>,
}

/// Peak RSS and CPU seconds of one controller over a stretch.
pub type Usage = (Option<u64>, Option<f64>);

impl Ctx<'_> {
    pub fn controller_of(&self, node: usize) -> usize {
        node % self.ctls.len()
    }

    /// Nodes linked to controller `c`.
    pub fn nodes_of(&self, c: usize) -> usize {
        (0..self.args.nodes)
            .filter(|&i| self.controller_of(i) == c)
            .count()
    }

    pub fn secs(&self, t: Instant) -> f64 {
        t.duration_since(self.start).as_secs_f64()
    }

    /// Each controller's peak RSS and CPU seconds between `a` and `b`.
    pub fn usage(&self, a: Instant, b: Instant) -> Vec<Usage> {
        self.samples
            .iter()
            .map(|s| match s {
                Some(s) => usage(&s.lock().unwrap(), a, b)
                    .map_or((None, None), |(r, c)| (Some(r), Some(c))),
                None => (None, None),
            })
            .collect()
    }

    /// With several controllers: sets each one's figures.
    pub fn per_controller(&self, mut set: impl FnMut(usize, &mut ControllerFigures)) {
        let mut r = self.report.lock().unwrap();
        for (c, f) in r.controllers.iter_mut().enumerate() {
            set(c, f);
        }
    }
}

pub async fn run(
    args: &Args,
    ctls: Vec<Arc<Controller>>,
    report: Arc<Mutex<Report>>,
) -> Result<(), String> {
    let samplers: Vec<_> = ctls
        .iter()
        .map(|c| c.pid.map(|_| sampler(c.pid_now.clone())))
        .collect();
    let n = args.nodes;
    let fleet = Arc::new(Fleet::new(n));
    let (storm_tx, storm_rx) = watch::channel(0u64);
    let cfgs: Vec<Arc<SimConfig>> = ctls
        .iter()
        .map(|c| {
            Arc::new(SimConfig {
                url: format!("http://{}", c.addr),
                flow_rate: args.flow_rate,
                call_timeout: (args.call_timeout > 0.0)
                    .then(|| Duration::from_secs_f64(args.call_timeout)),
                resume: !args.no_resume,
            })
        })
        .collect();
    let agent_token = ctls[0].agent_token.clone();
    let start = Instant::now();
    let (churn_tx, churn_rx): (Vec<_>, Vec<_>) = (0..n).map(|_| watch::channel(0u64)).unzip();
    let tasks: Vec<_> = (0..n)
        .zip(churn_rx)
        .map(|(i, churn)| {
            let name = format!("sim-{i}");
            let spec = NodeSpec {
                index: i,
                token: microseg_controller::node_token::node_token(&agent_token, &name),
                name,
                workloads: sim::workloads(i, args.workloads),
                churn,
            };
            let cfg = cfgs[i % cfgs.len()].clone();
            tokio::spawn(sim::run(cfg, spec, fleet.clone(), storm_rx.clone()))
        })
        .collect();
    let bad_logs: Vec<_> = args
        .bad
        .iter()
        .map(|&kind| (kind, Arc::new(Mutex::new(BadLog::default()))))
        .collect();
    let bad_tasks = bad_logs.iter().map(|(kind, log)| {
        let token = microseg_controller::node_token::node_token(&agent_token, kind.node_name());
        tokio::spawn(bad::run(cfgs[0].clone(), *kind, token, log.clone()))
    });
    let tasks: Vec<_> = tasks.into_iter().chain(bad_tasks).collect();
    let _abort = AbortAll(tasks);
    let ctx = Ctx {
        args,
        ctls: &ctls,
        fleet: &fleet,
        start,
        report: &report,
        samples: samplers
            .iter()
            .map(|s| s.as_ref().map(|s| s.0.clone()))
            .collect(),
    };
    if ctls.len() > 1 {
        report.lock().unwrap().controllers = ctls
            .iter()
            .enumerate()
            .map(|(c, ctl)| ControllerFigures {
                index: c,
                addr: ctl.addr.clone(),
                nodes: ctx.nodes_of(c),
                ..Default::default()
            })
            .collect();
    }
    let result = phases(&ctx, &storm_tx, &churn_tx).await;
    let bad = bad_report(&ctls[0], &bad_logs).await;
    let peaks: Vec<Option<u64>> = samplers
        .into_iter()
        .map(|s| {
            let (s, task) = s?;
            task.abort();
            let peak = s.lock().unwrap().iter().map(|x| x.rss_bytes).max();
            peak
        })
        .collect();
    ctx.per_controller(|c, f| {
        f.peak_rss_bytes = peaks[c];
        f.log_bytes = ctls[c].log_bytes();
    });
    let mut r = report.lock().unwrap();
    r.bad = bad;
    r.connects = fleet.connects.load(Ordering::Relaxed);
    r.flows_sent = fleet.flows_sent.load(Ordering::Relaxed);
    r.db_bytes = ctls[0].db_bytes();
    r.log_bytes = ctls[0].log_bytes();
    r.peak_rss_bytes = peaks[0];
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
    ctx: &Ctx<'_>,
    storm: &watch::Sender<u64>,
    churn: &[watch::Sender<u64>],
) -> Result<(), String> {
    startup(ctx).await?;

    // Idle: 2 s with nothing to do.
    let idle_from = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = ctx.usage(idle_from, Instant::now());
    let percent = |c: Option<f64>| c.map(|c| 100.0 * c / idle_from.elapsed().as_secs_f64());
    {
        let mut r = ctx.report.lock().unwrap();
        r.idle_rss_bytes = idle[0].0;
        r.idle_cpu_percent = percent(idle[0].1);
    }
    ctx.per_controller(|c, f| f.idle_rss_bytes = idle[c].0);

    crate::changes::run(ctx, churn).await?;
    if let Some(at) = ctx.args.reconnect_storm_at {
        crate::storm::run(ctx, storm, at).await?;
    }
    Ok(())
}

/// Every node starts at once: until each has its first full state, then all in sync.
async fn startup(ctx: &Ctx<'_>) -> Result<(), String> {
    let (fleet, n) = (ctx.fleet, ctx.args.nodes);
    let startup_limit = Duration::from_secs_f64(ctx.args.startup_timeout);
    let full = until(startup_limit, || {
        fleet.fulls.iter().all(|f| f.load(Ordering::Acquire) > 0)
    })
    .await;
    let synced = match full {
        Some(_) => in_sync(fleet, startup_limit.saturating_sub(ctx.start.elapsed())).await,
        None => None,
    };
    let end = Instant::now();
    let mut st = Startup {
        nodes_with_state: fleet
            .fulls
            .iter()
            .filter(|f| f.load(Ordering::Acquire) > 0)
            .count(),
        all_full_state_s: full.map(|t| ctx.secs(t)),
        all_in_sync_s: synced.map(|t| ctx.secs(t)),
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
    (st.errors, st.first_errors) = errors_since(fleet, ctx.start);
    let used = ctx.usage(ctx.start, end);
    (st.peak_rss_bytes, st.cpu_s) = used[0];
    ctx.report.lock().unwrap().startup = Some(st);
    ctx.per_controller(|c, f| f.startup_rss_peak_bytes = used[c].0);
    if synced.is_none() {
        return Err("the fleet did not get in sync within --startup-timeout".into());
    }
    Ok(())
}
