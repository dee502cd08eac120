//! `microseg status`: the nodes and the revision each enforces.

use std::process::ExitCode;

use microseg_controller::api_types::{List, NodeStatus};

use super::output::{cell, esc, print, table, Report};
use super::{call, client, finish, ClientArgs};

pub fn status(c: &ClientArgs, out: Report) -> ExitCode {
    finish((|| {
        let body: List<NodeStatus> = call(&client(c)?, "GET", "/v1/nodes", None)?;
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
