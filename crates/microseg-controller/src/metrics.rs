//! The controller's Prometheus metrics at `/metrics` (docs/METRICS.md), behind the token
//! like every other call. Each scrape reads the nodes and the flow ingest's counters
//! afresh into a registry of its own.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::api_types::{FlowStatus, NodeStatus};
use crate::core::health::{Reason, Totals};
use crate::core::Core;
use crate::error::Error;

/// The states `microseg_nodes` counts nodes in; each node is in exactly one.
const NODE_STATES: [&str; 4] = ["in_sync", "lagging", "error", "disconnected"];

pub(crate) async fn metrics(State(c): State<Arc<Core>>) -> Result<Response, Error> {
    let (revision, nodes) = c.nodes().await?;
    let flows = c.flows.status();
    let mut m = Metrics::default();
    m.gauge(
        "microseg_controller_revision",
        "The newest policy revision this controller knows",
        revision as i64,
    );
    node_metrics(&mut m, &nodes);
    bad_node_metrics(&mut m, &nodes, &c.health.totals());
    flow_metrics(&mut m, &flows);
    let mut text = String::new();
    prometheus_text::encode(&mut text, &m.0).map_err(|e| Error::Http {
        status: 500,
        message: format!("encoding the metrics: {e}"),
        details: Vec::new(),
    })?;
    Ok((
        [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
        text,
    )
        .into_response())
}

fn node_state(n: &NodeStatus) -> &'static str {
    if !n.connected {
        "disconnected"
    } else if n.error.is_some() {
        "error"
    } else if n.in_sync {
        "in_sync"
    } else {
        "lagging"
    }
}

fn node_metrics(m: &mut Metrics, nodes: &[NodeStatus]) {
    let count = |state: &str| nodes.iter().filter(|n| node_state(n) == state).count();
    m.gauge_family(
        "microseg_nodes",
        "Nodes known to the controller, by state (in_sync, lagging, error, disconnected)",
        NODE_STATES.map(|s| (vec![("state", s.to_string())], count(s) as i64)),
    );
    let per_node = |f: fn(&NodeStatus) -> i64| {
        nodes
            .iter()
            .map(move |n| (vec![("node", n.name.clone())], f(n)))
            .collect::<Vec<_>>()
    };
    m.gauge_family(
        "microseg_node_revision_lag",
        "Revisions each node's enforced policy is behind the controller's",
        per_node(|n| n.lag as i64),
    );
    m.gauge_family(
        "microseg_node_revision",
        "The controller revision each node enforces",
        per_node(|n| n.revision as i64),
    );
    m.gauge_family(
        "microseg_node_connected",
        "1 while the node has an open sync stream to this controller",
        per_node(|n| n.connected as i64),
    );
    m.gauge_family(
        "microseg_node_update_failed",
        "1 when the node's last policy update failed (GET /v1/nodes says why)",
        per_node(|n| n.error.is_some() as i64),
    );
}

/// Fleet-wide, not per node: a thousand nodes would make a thousand series of each, and
/// `GET /v1/nodes` names the nodes (docs/METRICS.md "Label cardinality").
fn bad_node_metrics(m: &mut Metrics, nodes: &[NodeStatus], t: &Totals) {
    m.gauge(
        "microseg_controller_nodes_behind",
        "Connected nodes that have not enforced the current revision for longer than --node-behind-after",
        nodes.iter().filter(|n| n.behind).count() as i64,
    );
    m.gauge(
        "microseg_controller_nodes_report_refused",
        "Nodes whose latest workload report was refused, whole or in part",
        t.nodes_refused as i64,
    );
    m.counter_family(
        "microseg_controller_node_reports_refused",
        "Workload reports refused whole (over_limit) or in part (invalid, conflict: some workloads skipped)",
        t.reports_refused
            .map(|(r, v)| (vec![("reason", r.as_str().to_string())], v)),
    );
    m.counter_family(
        "microseg_controller_reported_workloads_skipped",
        "Reported workloads skipped: invalid, or conflict (an address or name another workload holds)",
        [
            (Reason::Invalid, t.workloads_invalid),
            (Reason::Conflict, t.workloads_conflict),
        ]
        .map(|(r, v)| (vec![("reason", r.as_str().to_string())], v)),
    );
}

fn flow_metrics(m: &mut Metrics, f: &FlowStatus) {
    let counters = [
        (
            "microseg_flow_ingest_received",
            "Flow records uploaded by agents, rejected ones included",
            f.received,
        ),
        (
            "microseg_flow_ingest_stored",
            "Flow records written to the flow store",
            f.stored,
        ),
        (
            "microseg_flow_ingest_rejected",
            "Uploaded flow records that were no valid flow",
            f.rejected,
        ),
        (
            "microseg_flow_ingest_dropped",
            "Flow records dropped by the controller: its ingest queue was full",
            f.dropped,
        ),
    ];
    for (name, help, v) in counters {
        m.counter(name, help, v);
    }
    m.gauge(
        "microseg_flow_ingest_queued",
        "Flow records waiting to be stored",
        f.queued as i64,
    );
    m.gauge(
        "microseg_flow_ingest_queue_capacity",
        "The most flow records the ingest queue holds",
        f.queue_bound as i64,
    );
    m.gauge(
        "microseg_flow_store_up",
        "1 while the flow store works, 0 after a failure (GET /v1/flows/status says why)",
        f.ok as i64,
    );
    m.counter_family(
        "microseg_flow_agent_dropped",
        "Flow records each node's agent dropped (its upload buffer full) since it started",
        f.agent_dropped
            .iter()
            .map(|(node, n)| (vec![("node", node.clone())], *n)),
    );
}

/// One scrape's registry.
#[derive(Default)]
struct Metrics(Registry);

type Labels = Vec<(&'static str, String)>;

impl Metrics {
    /// A counter: the text format names it `NAME_total`.
    fn counter(&mut self, name: &str, help: &str, v: u64) {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        self.0.register(name, help, c);
    }

    fn gauge(&mut self, name: &str, help: &str, v: i64) {
        let g = Gauge::<i64>::default();
        g.set(v);
        self.0.register(name, help, g);
    }

    fn counter_family(
        &mut self,
        name: &str,
        help: &str,
        items: impl IntoIterator<Item = (Labels, u64)>,
    ) {
        let f = Family::<Labels, Counter<u64>>::default();
        for (labels, v) in items {
            f.get_or_create(&labels).inc_by(v);
        }
        self.0.register(name, help, f);
    }

    fn gauge_family(
        &mut self,
        name: &str,
        help: &str,
        items: impl IntoIterator<Item = (Labels, i64)>,
    ) {
        let f = Family::<Labels, Gauge<i64>>::default();
        for (labels, v) in items {
            f.get_or_create(&labels).set(v);
        }
        self.0.register(name, help, f);
    }
}
