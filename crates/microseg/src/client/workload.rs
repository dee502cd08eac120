//! `workload list`, `get`, `label` and `delete` against the controller.

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::Value;

use super::output::{labels, print, text};
use super::{
    call, check_name, client, delete, finish, format, get_one, list, ClientArgs, Fail, Format,
};

#[derive(Subcommand)]
pub enum WorkloadCommand {
    /// Workloads known to the controller (applied and discovered) with their labels.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// One workload.
    Get {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set labels: KEY=VALUE sets (KEY= sets the empty value), KEY- removes. On a
    /// discovered workload these labels win over the agent's and persist.
    Label {
        name: String,
        #[arg(required = true, value_name = "KEY=VALUE|KEY-")]
        labels: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a workload created through the API.
    Delete {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

const WORKLOAD_HEADER: &[&str] = &["NAME", "NODE", "INTERFACE", "IPS", "MODE", "LABELS"];

fn workload_rows(items: &[Value]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|w| {
            let ips: Vec<String> = w["spec"]["ips"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            vec![
                text(&w["metadata"]["name"]),
                text(&w["metadata"]["annotations"]["microseg.io/node"]),
                text(&w["spec"]["interface"]),
                if ips.is_empty() {
                    "-".into()
                } else {
                    ips.join(",")
                },
                text(&w["spec"]["mode"]),
                labels(&w["metadata"]["labels"]),
            ]
        })
        .collect()
}

/// KEY=VALUE sets, KEY- removes.
fn label_changes(args: &[String]) -> Result<serde_json::Map<String, Value>, Fail> {
    let mut m = serde_json::Map::new();
    for a in args {
        if let Some((k, v)) = a.split_once('=') {
            m.insert(k.to_string(), Value::String(v.to_string()));
        } else if let Some(k) = a.strip_suffix('-') {
            m.insert(k.to_string(), Value::Null);
        } else {
            return Err(Fail(
                format!("error: {a:?}: use KEY=VALUE to set a label or KEY- to remove it"),
                2,
            ));
        }
    }
    Ok(m)
}

pub fn workload(cmd: WorkloadCommand) -> ExitCode {
    finish(match cmd {
        WorkloadCommand::List { client } => {
            list(&client, "/v1/workloads", WORKLOAD_HEADER, workload_rows)
        }
        WorkloadCommand::Get { name, client } => check_name(&name).and_then(|_| {
            get_one(
                &client,
                &format!("/v1/workloads/{name}"),
                WORKLOAD_HEADER,
                workload_rows,
            )
        }),
        WorkloadCommand::Delete { name, client } => check_name(&name)
            .and_then(|_| delete(&client, "workload", &format!("/v1/workloads/{name}"), &name)),
        WorkloadCommand::Label {
            name,
            labels,
            client: c,
        } => (|| {
            check_name(&name)?;
            let f = format(&c)?;
            let changes = label_changes(&labels)?;
            let body = serde_json::json!({ "labels": changes }).to_string();
            let r = call(
                &client(&c)?,
                "PUT",
                &format!("/v1/workloads/{name}/labels"),
                Some(("application/json", body.as_bytes())),
            )?;
            match f {
                Format::Table => println!(
                    "workload/{name} labeled (revision {}): {}",
                    text(&r["revision"]),
                    labels_fmt(&r["labels"])
                ),
                _ => print(&r, f),
            }
            Ok(())
        })(),
    })
}

fn labels_fmt(v: &Value) -> String {
    labels(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_set_and_remove() {
        let m = label_changes(&["a=1".into(), "b=".into(), "c-".into()])
            .ok()
            .unwrap();
        assert_eq!(
            Value::Object(m),
            serde_json::json!({"a": "1", "b": "", "c": null})
        );
        assert!(label_changes(&["nope".into()]).is_err());
    }
}
