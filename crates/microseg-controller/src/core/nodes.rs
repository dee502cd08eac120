//! What is known of the nodes: the revision each enforces and its open streams.

use super::{rfc3339, Core};
use crate::api_types::NodeStatus;
use crate::error::Error;

impl Core {
    pub async fn nodes(&self) -> Result<(u64, Vec<NodeStatus>), Error> {
        let rev = self.store.revision().await?;
        let streams = self.streams.lock().map(|s| s.clone()).unwrap_or_default();
        let nodes = self.store.nodes().await?;
        let items = nodes
            .into_iter()
            .map(|n| NodeStatus {
                connected: streams.get(&n.name).copied().unwrap_or(0) > 0,
                controller_revision: rev,
                in_sync: n.revision >= rev && n.error.is_empty(),
                lag: rev.saturating_sub(n.revision),
                last_ack: n.last_ack.map(rfc3339),
                last_seen: rfc3339(n.last_seen),
                revision: n.revision,
                error: (!n.error.is_empty()).then_some(n.error),
                name: n.name,
            })
            .collect();
        Ok((rev, items))
    }
}
