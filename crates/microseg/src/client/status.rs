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
        let problems = problems(&body.items);
        if !problems.is_empty() {
            outln!("\nnodes with problems: {}", problems.len());
            table(&["NODE", "PROBLEM", "WHEN", "COUNT", "DETAIL"], &problems);
        }
        Ok(())
    })())
}

/// One row per problem of a node: behind (connected, not enforcing the current revision
/// for longer than the controller's --node-behind-after), its last update failed, or its
/// latest workload report was refused (docs/CONTROLLER.md "Bad nodes").
fn problems(nodes: &[NodeStatus]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for n in nodes {
        if n.behind {
            let last_ack = n.last_ack.as_deref().unwrap_or("never");
            rows.push(vec![
                cell(&n.name),
                "behind".into(),
                cell(n.behind_since.as_deref().unwrap_or("")),
                format!("{} revision(s)", n.lag),
                format!(
                    "enforces revision {} of {}; last ack {last_ack}",
                    n.revision, n.controller_revision
                ),
            ]);
        }
        if let Some(e) = &n.error {
            rows.push(vec![
                cell(&n.name),
                "update failed".into(),
                cell(n.last_ack.as_deref().unwrap_or("")),
                "-".into(),
                e.clone(),
            ]);
        }
        let Some(r) = n.reports.as_ref().filter(|r| r.last_refused) else {
            continue;
        };
        let Some(last) = &r.last_refusal else {
            continue;
        };
        let problem = match last.reason.as_str() {
            "over_limit" => "report refused",
            _ => "report partly refused",
        };
        rows.push(vec![
            cell(&n.name),
            problem.into(),
            cell(&last.at),
            format!(
                "{} of {} report(s), {} workload(s) skipped",
                r.refused, r.received, r.workloads_skipped
            ),
            format!("{}: {}", last.reason, last.message),
        ]);
    }
    rows
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
