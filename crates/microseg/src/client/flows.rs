//! `microseg flows --server`: the flows the controller collected.

use std::path::PathBuf;

use microseg_controller::api_types::FlowList;
use microseg_controller::client::encode;
use serde_json::Value;

use super::{call, client, ClientArgs, CommandError, TlsArgs};

/// What `flows --server` asks the controller for.
pub struct RemoteFlows {
    pub server: String,
    pub token_file: Option<PathBuf>,
    pub tls: TlsArgs,
    pub verdict: Option<String>,
    pub workload: Option<String>,
    pub since_s: Option<f64>,
    /// The most recent this many.
    pub limit: Option<usize>,
}

/// Recent flows the controller collected from its agents, filtered like the agent's,
/// oldest first.
pub fn remote_flows(q: RemoteFlows) -> Result<Vec<Value>, CommandError> {
    let c = ClientArgs {
        server: q.server,
        token_file: q.token_file,
        tls: q.tls,
    };
    let mut params = Vec::new();
    if let Some(v) = &q.verdict {
        params.push(format!("verdict={}", encode(v)));
    }
    if let Some(w) = &q.workload {
        params.push(format!("workload={}", encode(w)));
    }
    if let Some(s) = q.since_s {
        params.push(format!("since={s}"));
    }
    if let Some(l) = q.limit {
        params.push(format!("limit={l}"));
    }
    let path = if params.is_empty() {
        "/v1/flows".to_string()
    } else {
        format!("/v1/flows?{}", params.join("&"))
    };
    let flows: FlowList = call(&client(&c)?, "GET", &path, None)?;
    Ok(flows.items)
}
