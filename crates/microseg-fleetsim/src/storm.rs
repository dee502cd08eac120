//! The reconnect storm: every link dropped at once, or controller 0 restarted (then only
//! its nodes reconnect, to it: an agent knows one controller address) (docs/FLEETSIM.md).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::phases::{errors_since, in_sync, until, Ctx};
use crate::report::Storm;

pub async fn run(ctx: &Ctx<'_>, storm: &watch::Sender<u64>, at: f64) -> Result<(), String> {
    let fleet = ctx.fleet;
    let wait = Duration::from_secs_f64(at).saturating_sub(ctx.start.elapsed());
    tokio::time::sleep(wait).await;
    let before: Vec<u64> = fleet
        .fulls
        .iter()
        .map(|f| f.load(Ordering::Acquire))
        .collect();
    // The nodes whose links break: all, or the restarted controller's.
    let restarted = ctx.args.storm_restart.then_some(0);
    let dropped: Vec<bool> = (0..ctx.args.nodes)
        .map(|i| restarted.is_none_or(|c| ctx.controller_of(i) == c))
        .collect();
    let nodes_dropped = dropped.iter().filter(|&&d| d).count();
    let t = Instant::now();
    let mut restart_s = None;
    if let Some(c) = restarted {
        // The links break as the controller stops; each node reconnects on its own.
        let took = tokio::task::block_in_place(|| ctx.ctls[c].restart())?;
        restart_s = Some(took.as_secs_f64());
    } else {
        storm.send_modify(|e| *e += 1);
    }
    let limit = Duration::from_secs_f64(ctx.args.startup_timeout);
    let resynced = || {
        fleet
            .fulls
            .iter()
            .zip(&before)
            .zip(&dropped)
            .filter(|((f, b), &d)| d && f.load(Ordering::Acquire) > **b)
            .count()
    };
    let full = until(limit, || resynced() == nodes_dropped).await;
    let synced = match full {
        Some(_) => in_sync(fleet, limit.saturating_sub(t.elapsed())).await,
        None => None,
    };
    let after_t = |l: &std::sync::Mutex<crate::sim::NodeLog>| {
        let l = l.lock().unwrap();
        let full = l.revisions.iter().any(|r| r.full && r.received > t);
        let bytes: u64 = l
            .revisions
            .iter()
            .filter(|r| r.received > t)
            .map(|r| r.bytes)
            .sum();
        (full, bytes)
    };
    let seen: Vec<(bool, u64)> = fleet.logs.iter().map(after_t).collect();
    let mut s = Storm {
        at_s: ctx.secs(t),
        all_full_state_s: full.map(|x| (x - t).as_secs_f64()),
        all_in_sync_s: synced.map(|x| x.saturating_duration_since(t).as_secs_f64()),
        nodes_resynced: resynced(),
        restart_s,
        restarted_controller: restarted,
        nodes_dropped,
        full_states: seen.iter().filter(|x| x.0).count(),
        bytes_per_node_max: seen.iter().map(|x| x.1).max().unwrap_or(0),
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
    let used = ctx.usage(t, Instant::now());
    (s.peak_rss_bytes, s.cpu_s) = used[0];
    ctx.report.lock().unwrap().storm = Some(s);
    ctx.per_controller(|c, f| f.storm_rss_peak_bytes = used[c].0);
    Ok(())
}
