//! What is known of the nodes: the revision each enforces, its open streams, and the
//! flows it uploaded.

use super::{now, rfc3339, Core};
use crate::api_types::NodeStatus;
use crate::error::Error;
use serde_json::{json, Value};

/// Largest flow a node may upload, in bytes of JSON: a flow holds about 400.
pub const MAX_FLOW_BYTES: usize = 4096;

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

    /// Keeps the flows `node` uploaded; returns how many were kept. A flow is always
    /// `node`'s, whatever it says: a node speaks only for itself. One larger than
    /// [`MAX_FLOW_BYTES`] is dropped, so the bounded buffer is bounded in bytes too.
    pub fn add_flows(&self, node: &str, flows: &[String]) -> u64 {
        let at = now();
        let mut accepted = 0;
        if let Ok(mut f) = self.flows.lock() {
            for text in flows {
                if text.len() > MAX_FLOW_BYTES {
                    continue;
                }
                let Ok(mut v) = serde_json::from_str::<Value>(text) else {
                    continue;
                };
                let Some(obj) = v.as_object_mut() else {
                    continue;
                };
                obj.insert("node".into(), json!(node));
                f.push(at, v);
                accepted += 1;
            }
        }
        accepted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::FlowQuery;
    use std::sync::Arc;
    use tokio::sync::watch;

    #[test]
    fn an_uploaded_flow_is_its_uploaders_and_bounded_in_size() {
        let store = crate::store::sqlite::Sqlite::open(std::path::Path::new(":memory:")).unwrap();
        let (rev, _) = watch::channel(0);
        let (_stop, shutdown) = watch::channel(false);
        let core = Core::new(Arc::new(store), Arc::new(rev), 100, shutdown);
        let flow = |node: &str, pad: usize| {
            json!({"node": node, "workload": "db-1", "verdict": "deny", "pad": "x".repeat(pad)})
                .to_string()
        };
        let kept = core.add_flows("a", &[flow("b", 0), flow("", 0), flow("a", MAX_FLOW_BYTES)]);
        assert_eq!(kept, 2, "the oversized flow is dropped");
        let flows = core
            .flows
            .lock()
            .unwrap()
            .query(&FlowQuery::default())
            .unwrap();
        let nodes: Vec<_> = flows.iter().map(|f| f["node"].as_str().unwrap()).collect();
        assert_eq!(nodes, ["a", "a"], "a node cannot speak for another");
    }
}
