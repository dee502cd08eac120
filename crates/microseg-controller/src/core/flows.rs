//! Uploaded flows into the flow record: converted, both ends named from the workloads
//! by address, queued for the writer (`flow_ingest.rs`).

use super::Core;
use crate::flow_convert::{from_json, from_proto, AddrIndex};
use crate::resources::WORKLOAD;
use microseg_proto::v1::FlowBatch;
use std::sync::Arc;

impl Core {
    /// The workloads by address, built again when the revision moved since.
    async fn addr_index(&self) -> Arc<AddrIndex> {
        let rev = *self.rev.borrow();
        let mut cached = self.addrs.lock().await;
        if cached.0 != Some(rev) {
            match self.store.list(Some(WORKLOAD)).await {
                Ok(rows) => *cached = (Some(rev), Arc::new(AddrIndex::build(&rows))),
                // The last index serves until the store answers again.
                Err(e) => tracing::warn!(error = %e, "flows: reading the workloads failed"),
            }
        }
        cached.1.clone()
    }

    /// Queues a batch `node` uploaded (every record is `node`'s, whatever it says);
    /// returns how many records were queued.
    pub async fn add_flows(&self, node: &str, batch: FlowBatch) -> u64 {
        let index = self.addr_index().await;
        let (mut records, mut rejected) = (Vec::new(), 0u64);
        let converted = batch
            .flows
            .into_iter()
            .map(|f| from_proto(node, f))
            .chain(batch.flows_json.iter().map(|t| from_json(node, t)));
        for r in converted {
            match r {
                Ok(mut r) => {
                    index.decorate(&mut r);
                    records.push(r);
                }
                Err(why) => {
                    rejected += 1;
                    tracing::debug!(node, reason = why.0, "flow rejected");
                }
            }
        }
        self.flows.agent_dropped(node, batch.dropped_total);
        self.flows.push(records, rejected).await
    }
}
