//! What a run measured, printed one line per measurement or as JSON (docs/FLEETSIM.md).

use serde::Serialize;

use crate::Args;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Startup {
    pub nodes_with_state: usize,
    /// From the first connect to the last node's first full state (acked).
    pub all_full_state_s: Option<f64>,
    /// Until every node acked the same, last revision (held for 1 s).
    pub all_in_sync_s: Option<f64>,
    pub revision: u64,
    pub full_state_bytes_per_node_mean: u64,
    pub bytes_per_node_mean: u64,
    pub bytes_per_node_max: u64,
    pub revisions_per_node_mean: f64,
    pub errors: usize,
    pub first_errors: Vec<String>,
    pub peak_rss_bytes: Option<u64>,
    pub cpu_s: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Change {
    pub revision: u64,
    pub apply_ms: f64,
    /// From the apply returning to the last node's ack (None: not all within the timeout).
    pub last_ack_ms: Option<f64>,
    /// The same from the apply's request being sent (the push may start before the
    /// answer arrives).
    pub last_ack_from_sent_ms: Option<f64>,
    /// From the apply returning to the last node's receipt of it (whole, all parts).
    pub last_receive_ms: Option<f64>,
    pub nodes_acked: usize,
    pub bytes_total: u64,
    pub bytes_per_node_max: u64,
    /// With --controllers K > 1: `last_ack_ms` over each controller's nodes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub last_ack_by_controller_ms: Vec<Option<f64>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes_acked_by_controller: Vec<usize>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Changes {
    pub items: Vec<Change>,
    pub last_ack_p50_ms: Option<f64>,
    pub last_ack_p99_ms: Option<f64>,
    pub last_ack_from_sent_p50_ms: Option<f64>,
    pub last_ack_from_sent_p99_ms: Option<f64>,
    pub apply_p50_ms: Option<f64>,
    pub bytes_total_mean: u64,
    pub bytes_per_node_mean: u64,
    pub peak_rss_bytes: Option<u64>,
    pub cpu_s: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Storm {
    pub at_s: f64,
    /// Until every node had acked the first revision of its new stream after the drop (a
    /// full state, or what changed since the revision it held when it resumed).
    pub all_full_state_s: Option<f64>,
    pub all_in_sync_s: Option<f64>,
    pub nodes_resynced: usize,
    /// With --storm-restart: how long the controller took to stop and listen again.
    pub restart_s: Option<f64>,
    /// With --storm-restart: the controller restarted (its nodes are the ones that
    /// must resync; with --controllers K the others keep their links).
    pub restarted_controller: Option<usize>,
    /// Nodes whose links broke and had to resync.
    pub nodes_dropped: usize,
    /// With --storm-restart: errors once it listened again (the first five of these are
    /// then the ones listed).
    pub errors_after_restart: Option<usize>,
    /// Nodes that got a full state after the drop (the others resumed).
    pub full_states: usize,
    /// Bytes received after the drop by the node that got most.
    pub bytes_per_node_max: u64,
    pub errors: usize,
    pub first_errors: Vec<String>,
    pub peak_rss_bytes: Option<u64>,
    pub cpu_s: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub nodes: usize,
    pub workloads: usize,
    pub db: String,
    pub flow_rate: u32,
    pub startup: Option<Startup>,
    pub idle_rss_bytes: Option<u64>,
    pub idle_cpu_percent: Option<f64>,
    pub changes: Option<Changes>,
    pub storm: Option<Storm>,
    pub peak_rss_bytes: Option<u64>,
    pub db_bytes: Option<u64>,
    /// The started controller's log, at the end.
    pub log_bytes: Option<u64>,
    pub connects: usize,
    pub flows_sent: u64,
    pub churn: Option<ChurnReport>,
    pub bad: Vec<BadReport>,
    /// With --controllers K > 1: each controller's own figures (the RSS and CPU figures
    /// above are then controller 0's).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub controllers: Vec<ControllerFigures>,
    pub failure: Option<String>,
}

/// One of K controllers sharing a database: its nodes' change figures and its process.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ControllerFigures {
    pub index: usize,
    pub addr: String,
    pub nodes: usize,
    /// Over the changes, from the apply's answer (on controller 0) to the last of this
    /// controller's nodes acking it.
    pub last_ack_p50_ms: Option<f64>,
    pub last_ack_p99_ms: Option<f64>,
    pub last_ack_from_sent_p50_ms: Option<f64>,
    pub last_ack_from_sent_p99_ms: Option<f64>,
    pub startup_rss_peak_bytes: Option<u64>,
    pub idle_rss_bytes: Option<u64>,
    pub changes_rss_peak_bytes: Option<u64>,
    pub changes_cpu_s: Option<f64>,
    pub storm_rss_peak_bytes: Option<u64>,
    pub peak_rss_bytes: Option<u64>,
    pub log_bytes: Option<u64>,
}

/// Workload churn while the changes ran.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChurnReport {
    pub percent_per_s: f64,
    pub seconds: f64,
    /// Steps asked (each replaces a tenth of a node's workloads).
    pub steps: u64,
    pub workloads_replaced: u64,
    pub reports_ok: u64,
    pub reports_failed: u64,
    /// Bytes each node received a second while it ran (mean over the nodes).
    pub bytes_per_node_per_s: f64,
    pub revisions_per_node: f64,
}

/// A bad node at the end of the run: what it saw, and what the controller says of it.
#[derive(Clone, Debug, Serialize)]
pub struct BadReport {
    pub kind: crate::bad::BadKind,
    pub node: String,
    pub log: crate::bad::BadLog,
    /// Its entry in `GET /v1/nodes` (None: not listed), or the call's error.
    pub status: Result<Option<serde_json::Value>, String>,
    /// The lines of `/metrics` that name it.
    pub metrics: Vec<String>,
}

impl Report {
    pub fn new(a: &Args) -> Report {
        Report {
            nodes: a.nodes,
            workloads: a.workloads,
            db: match (a.db.as_deref(), a.controllers) {
                (None, _) => "sqlite".into(),
                (Some(d), 1) => d.into(),
                (Some(d), k) => format!("{d} controllers={k}"),
            },
            flow_rate: a.flow_rate,
            ..Default::default()
        }
    }

    pub fn print(&self, output: &str) {
        if output == "json" {
            println!("{}", serde_json::to_string_pretty(self).unwrap_or_default());
            return;
        }
        let p = format!(
            "nodes={} workloads={} db={} flow_rate={}",
            self.nodes, self.workloads, self.db, self.flow_rate
        );
        let s = |v: Option<f64>| v.map_or("none".into(), |x| format!("{x:.3}s"));
        let ms = |v: Option<f64>| v.map_or("none".into(), |x| format!("{x:.1}ms"));
        let mib =
            |v: Option<u64>| v.map_or("none".into(), |x| format!("{:.1}MiB", x as f64 / 1048576.0));
        let cpu = |v: Option<f64>| v.map_or("none".into(), |x| format!("{x:.2}s"));
        if let Some(st) = &self.startup {
            println!(
                "{p} startup: nodes_with_state={}/{} all_full_state={} all_in_sync={} revision={} full_state_bytes_per_node={} bytes_per_node_mean={} max={} revisions_per_node={:.1} errors={} rss_peak={} cpu={}",
                st.nodes_with_state, self.nodes, s(st.all_full_state_s), s(st.all_in_sync_s), st.revision,
                st.full_state_bytes_per_node_mean, st.bytes_per_node_mean, st.bytes_per_node_max,
                st.revisions_per_node_mean, st.errors, mib(st.peak_rss_bytes), cpu(st.cpu_s)
            );
            for e in &st.first_errors {
                println!("{p} startup error: {e}");
            }
        }
        if self.idle_rss_bytes.is_some() {
            println!(
                "{p} idle: rss={} cpu={}",
                mib(self.idle_rss_bytes),
                self.idle_cpu_percent
                    .map_or("none".into(), |c| format!("{c:.1}%"))
            );
        }
        if let Some(c) = &self.changes {
            for (k, ch) in c.items.iter().enumerate() {
                println!(
                    "{p} change={k} revision={} apply={:.1}ms last_ack={} last_ack_from_sent={} last_receive={} nodes_acked={}/{} bytes_total={} bytes_per_node_max={}",
                    ch.revision, ch.apply_ms, ms(ch.last_ack_ms), ms(ch.last_ack_from_sent_ms), ms(ch.last_receive_ms), ch.nodes_acked, self.nodes, ch.bytes_total, ch.bytes_per_node_max
                );
                if !ch.last_ack_by_controller_ms.is_empty() {
                    let each: Vec<String> = ch
                        .last_ack_by_controller_ms
                        .iter()
                        .zip(&ch.nodes_acked_by_controller)
                        .enumerate()
                        .map(|(c, (t, n))| format!("c{c}={}({n})", ms(*t)))
                        .collect();
                    println!(
                        "{p} change={k} last_ack_by_controller(nodes_acked): {}",
                        each.join(" ")
                    );
                }
            }
            println!(
                "{p} changes={} last_ack_p50={} p99={} from_sent_p50={} p99={} apply_p50={} bytes_total_mean={} bytes_per_node_mean={} rss_peak={} cpu={}",
                c.items.len(), ms(c.last_ack_p50_ms), ms(c.last_ack_p99_ms),
                ms(c.last_ack_from_sent_p50_ms), ms(c.last_ack_from_sent_p99_ms), ms(c.apply_p50_ms),
                c.bytes_total_mean, c.bytes_per_node_mean, mib(c.peak_rss_bytes), cpu(c.cpu_s)
            );
        }
        if let Some(st) = &self.storm {
            println!(
                "{p} storm: at={:.1}s restart={} restarted_controller={} nodes_dropped={} all_resynced={} all_in_sync={} nodes_resynced={}/{} full_states={} bytes_per_node_max={} errors={} errors_after_restart={} rss_peak={} cpu={}",
                st.at_s, s(st.restart_s), st.restarted_controller.map_or("-".to_string(), |c| c.to_string()), st.nodes_dropped, s(st.all_full_state_s), s(st.all_in_sync_s), st.nodes_resynced, st.nodes_dropped,
                st.full_states, st.bytes_per_node_max, st.errors,
                st.errors_after_restart.map_or("-".to_string(), |n| n.to_string()),
                mib(st.peak_rss_bytes), cpu(st.cpu_s)
            );
            for e in &st.first_errors {
                println!("{p} storm error: {e}");
            }
        }
        if let Some(c) = &self.churn {
            println!(
                "{p} churn: percent_per_s={} seconds={:.1} steps={} workloads_replaced={} reports_ok={} reports_failed={} bytes_per_node_per_s={:.0} revisions_per_node={:.1}",
                c.percent_per_s, c.seconds, c.steps, c.workloads_replaced, c.reports_ok, c.reports_failed, c.bytes_per_node_per_s, c.revisions_per_node
            );
        }
        for b in &self.bad {
            let status = match &b.status {
                Ok(Some(v)) => v.to_string(),
                Ok(None) => "not-listed".into(),
                Err(e) => format!("error: {e}"),
            };
            println!(
                "{p} bad={:?} node={} revisions_received={} last_revision={} bytes_received={} outcomes={:?} status={status}",
                b.kind, b.node, b.log.revisions_received, b.log.last_revision, b.log.bytes_received, b.log.outcomes
            );
            for m in &b.metrics {
                println!("{p} bad={:?} metric: {m}", b.kind);
            }
        }
        for c in &self.controllers {
            println!(
                "{p} controller={} addr={} nodes={} last_ack_p50={} p99={} from_sent_p50={} p99={} startup_rss_peak={} idle_rss={} changes_rss_peak={} changes_cpu={} storm_rss_peak={} rss_peak={} log_bytes={}",
                c.index, c.addr, c.nodes, ms(c.last_ack_p50_ms), ms(c.last_ack_p99_ms),
                ms(c.last_ack_from_sent_p50_ms), ms(c.last_ack_from_sent_p99_ms),
                mib(c.startup_rss_peak_bytes), mib(c.idle_rss_bytes), mib(c.changes_rss_peak_bytes),
                cpu(c.changes_cpu_s), mib(c.storm_rss_peak_bytes), mib(c.peak_rss_bytes),
                c.log_bytes.map_or("none".into(), |b| b.to_string())
            );
        }
        println!(
            "{p} total: rss_peak={} db_bytes={} log_bytes={} connects={} flows_sent={}{}",
            mib(self.peak_rss_bytes),
            self.db_bytes.map_or("none".into(), |b| b.to_string()),
            self.log_bytes.map_or("none".into(), |b| b.to_string()),
            self.connects,
            self.flows_sent,
            self.failure
                .as_ref()
                .map_or(String::new(), |f| format!(" failure={f:?}"))
        );
    }
}

pub fn percentile(v: &[f64], q: f64) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((q * v.len() as f64).ceil() as usize).max(1) - 1;
    v.get(i).copied()
}
