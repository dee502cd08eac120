//! `microseg status`: the nodes and the revision each enforces.

use std::process::ExitCode;

use super::output::{print, table, text};
use super::{call, client, finish, format, ClientArgs, Format};

pub fn status(c: &ClientArgs) -> ExitCode {
    finish((|| {
        let f = format(c)?;
        let body = call(&client(c)?, "GET", "/v1/nodes", None)?;
        if f != Format::Table {
            print(&body, f);
            return Ok(());
        }
        let items = body["items"].as_array().cloned().unwrap_or_default();
        println!(
            "controller {}: revision {}, {} node(s)",
            c.server,
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
