//! `microseg flows --server`: the flows the controller collected.

use std::path::Path;
use std::process::ExitCode;

use microseg_controller::client::encode;
use serde_json::Value;

use super::{call, client, finish, ClientArgs, TlsArgs};

/// Recent flows the controller collected from its agents (`microseg flows --server`),
/// filtered like the agent's; calls `each` for every record, oldest first.
pub fn remote_flows(
    server: &str,
    token_file: Option<&Path>,
    tls: TlsArgs,
    verdict: Option<&str>,
    workload: Option<&str>,
    since_s: Option<f64>,
    mut each: impl FnMut(Value),
) -> ExitCode {
    let c = ClientArgs {
        server: server.to_string(),
        token_file: token_file.map(Path::to_path_buf),
        tls,
        output: "json".into(),
    };
    finish((|| {
        let mut q = Vec::new();
        if let Some(v) = verdict {
            q.push(format!("verdict={}", encode(v)));
        }
        if let Some(w) = workload {
            q.push(format!("workload={}", encode(w)));
        }
        if let Some(s) = since_s {
            q.push(format!("since={s}"));
        }
        let path = if q.is_empty() {
            "/v1/flows".to_string()
        } else {
            format!("/v1/flows?{}", q.join("&"))
        };
        let body = call(&client(&c)?, "GET", &path, None)?;
        for f in body["items"].as_array().cloned().unwrap_or_default() {
            each(f);
        }
        Ok(())
    })())
}
