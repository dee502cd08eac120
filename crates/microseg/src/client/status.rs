//! `microseg status`: the nodes and the revision each enforces.

use std::process::ExitCode;

use super::output::{esc, print, table, text, Report};
use super::{call, client, finish, ClientArgs};

pub fn status(c: &ClientArgs, out: Report) -> ExitCode {
    finish((|| {
        let body = call(&client(c)?, "GET", "/v1/nodes", None)?;
        if out == Report::Json {
            print(&body, false);
            return Ok(());
        }
        let items = body["items"].as_array().cloned().unwrap_or_default();
        outln!(
            "controller {}: revision {}, {} node(s)",
            esc(&c.server),
            text(&body["revision"]),
            items.len()
        );
        let rows: Vec<Vec<String>> = items
            .iter()
            .map(|n| {
                vec![
                    text(&n["name"]),
                    text(&n["revision"]),
                    text(&n["lag"]),
                    if n["connected"] == true { "yes" } else { "no" }.into(),
                    text(&n["lastSeen"]),
                    text(&n["error"]),
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
