//! What the controller does, independent of how it is asked: the stored resources as the
//! API and the agents see them (`resources.rs`; apply and delete: `apply.rs`), the
//! workloads agents report (`report.rs`), what is known of the nodes: their sync
//! state and open streams (`nodes.rs`), and the flows they upload (`flows.rs`).

mod acks;
mod batch;
mod flows;
pub mod health;
mod nodes;
mod report;
mod resources;

pub use report::{DEFAULT_MAX_WORKLOADS_PER_NODE, MAX_WORKLOAD_ADDRESSES};

use crate::flow_convert::AddrIndex;
use crate::flow_ingest::FlowIngest;
use crate::store::{publish, Store};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub use microseg_common::time::rfc3339;

pub struct Core {
    pub store: Arc<dyn Store>,
    /// The newest revision known (local writes and, via the store, other controllers').
    pub rev: Arc<watch::Sender<u64>>,
    /// The flow record's queue, writer and store.
    pub flows: Arc<FlowIngest>,
    /// The workloads by address, and the revision it was built at.
    addrs: tokio::sync::Mutex<(Option<u64>, Arc<AddrIndex>)>,
    /// Nodes with an open Sync stream to this controller, and how many.
    pub streams: Mutex<BTreeMap<String, usize>>,
    pub shutdown: watch::Receiver<bool>,
    /// Workload reports waiting for the writer (`batch.rs`).
    reports: batch::Reports,
    /// Streams sending a revision: the report writer paces itself by them (`batch.rs`).
    pub(crate) sending: Arc<batch::Sending>,
    /// Acks waiting for their writer (`acks.rs`).
    acks: acks::Acks,
    /// How long without a new edge before a recommended policy is stable
    /// (`--recommend-quiet`, docs/RECOMMEND.md "Lifecycle").
    pub recommend_quiet: std::time::Duration,
    /// The most workloads one report may hold (`--max-workloads-per-node`).
    pub max_workloads_per_node: usize,
    /// A connected node lagging for longer is behind (`--node-behind-after`).
    pub node_behind_after: std::time::Duration,
    /// Each node's reports and the revisions' times (`health.rs`).
    pub health: health::Health,
}

impl Core {
    pub fn new(
        store: Arc<dyn Store>,
        rev: Arc<watch::Sender<u64>>,
        flows: Arc<FlowIngest>,
        shutdown: watch::Receiver<bool>,
    ) -> Core {
        Core {
            store,
            rev,
            flows,
            addrs: tokio::sync::Mutex::new((None, Arc::default())),
            streams: Mutex::new(BTreeMap::new()),
            shutdown,
            reports: batch::Reports::default(),
            sending: Arc::default(),
            acks: acks::Acks::default(),
            recommend_quiet: crate::DEFAULT_RECOMMEND_QUIET,
            max_workloads_per_node: DEFAULT_MAX_WORKLOADS_PER_NODE,
            node_behind_after: crate::DEFAULT_NODE_BEHIND_AFTER,
            health: health::Health::default(),
        }
    }

    /// Notes when each revision is first seen, for `behindSince`, until shutdown.
    pub fn track_revisions(self: &std::sync::Arc<Core>) {
        let core = self.clone();
        let mut rx = self.rev.subscribe();
        let mut shutdown = self.shutdown.clone();
        let first = *rx.borrow_and_update();
        core.health.revision_seen(first, now());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return },
                    _ = shutdown.changed() => return,
                }
                let rev = *rx.borrow_and_update();
                core.health.revision_seen(rev, now());
            }
        });
    }

    /// Stores a node's ack (batched with the others waiting).
    pub async fn ack(&self, ack: crate::store::AckRow) -> Result<(), crate::error::Error> {
        self.acks
            .write(&self.store, acks::NodeWrite::Ack(ack))
            .await
    }

    /// Marks a node seen now (batched with the others waiting).
    pub async fn touch(&self, node: &str) -> Result<(), crate::error::Error> {
        let seen = crate::store::AckRow {
            node: node.to_string(),
            revision: 0,
            error: String::new(),
            now: now(),
        };
        self.acks
            .write(&self.store, acks::NodeWrite::Seen(seen))
            .await
    }

    pub(crate) fn published(&self, rev: u64) -> u64 {
        publish(&self.rev, rev);
        rev
    }
}
