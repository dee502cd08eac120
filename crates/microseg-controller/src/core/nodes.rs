//! What is known of the nodes: the revision each enforces, its open streams, since when
//! it lags and how its reports went (`health.rs`).

use super::{now, rfc3339, Core};
use crate::api_types::NodeStatus;
use crate::error::Error;

impl Core {
    pub async fn nodes(&self) -> Result<(u64, Vec<NodeStatus>), Error> {
        let rev = self.store.revision().await?;
        let streams = self.streams.lock().map(|s| s.clone()).unwrap_or_default();
        let nodes = self.store.nodes().await?;
        let now = now();
        let grace = self.node_behind_after.as_secs_f64();
        let items = nodes
            .into_iter()
            .map(|n| {
                let connected = streams.get(&n.name).copied().unwrap_or(0) > 0;
                let in_sync = n.revision >= rev && n.error.is_empty();
                let since = (n.revision < rev)
                    .then(|| self.health.behind_since(n.revision))
                    .flatten();
                NodeStatus {
                    behind: connected && !in_sync && since.is_some_and(|t| now - t > grace),
                    behind_since: since.map(rfc3339),
                    connected,
                    controller_revision: rev,
                    in_sync,
                    lag: rev.saturating_sub(n.revision),
                    last_ack: n.last_ack.map(rfc3339),
                    last_seen: rfc3339(n.last_seen),
                    revision: n.revision,
                    error: (!n.error.is_empty()).then_some(n.error),
                    reports: self.health.of(&n.name),
                    name: n.name,
                }
            })
            .collect();
        Ok((rev, items))
    }
}
