//! `microseg status`: the nodes and the revision each enforces, and how the flow record
//! is kept.

use std::process::ExitCode;

use microseg_controller::api_types::{FlowStatus, List, NodeStatus};

use super::output::{cell, esc, print, table, Report};
use super::{call, client, finish, ClientArgs};

pub fn status(c: &ClientArgs, out: Report) -> ExitCode {
    finish((|| {
        let cl = client(c)?;
        let body: List<NodeStatus> = call(&cl, "GET", "/v1/nodes", None)?;
        if out == Report::Json {
            print(&body, false);
            return Ok(());
        }
        outln!(
            "controller {}: revision {}, {} node(s)",
            esc(&c.server),
            body.revision,
            body.items.len()
        );
        // A controller before the flow record has no such endpoint: said, not fatal.
        match call::<FlowStatus>(&cl, "GET", "/v1/flows/status", None) {
            Ok(f) => outln!("{}", flows_line(&f)),
            Err(e) => outln!("flows: unknown ({})", esc(&e.to_string())),
        }
        let rows: Vec<Vec<String>> = body
            .items
            .iter()
            .map(|n| {
                vec![
                    cell(&n.name),
                    n.revision.to_string(),
                    n.lag.to_string(),
                    if n.connected { "yes" } else { "no" }.into(),
                    cell(&n.last_seen),
                    cell(n.error.as_deref().unwrap_or("")),
                ]
            })
            .collect();
        table(
            &["NODE", "ENFORCED", "LAG", "CONNECTED", "LAST SEEN", "ERROR"],
            &rows,
        );
        Ok(())
    })())
}

/// One line: the store and its state, then the counts.
fn flows_line(f: &FlowStatus) -> String {
    let state = match &f.error {
        None => "ok".to_string(),
        Some(e) => format!("error: {}", esc(e)),
    };
    let agents: u64 = f.agent_dropped.values().sum();
    format!(
        "flows: {} store {state}; {} received, {} stored, {} queued (of {}), {} dropped by the controller, {} rejected, {agents} dropped by agents",
        f.backend, f.received, f.stored, f.queued, f.queue_bound, f.dropped, f.rejected
    )
}
