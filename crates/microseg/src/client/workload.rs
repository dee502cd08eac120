//! `workload list`, `get`, `label` and `delete` against the controller.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use microseg_controller::api_types::{LabelRequest, LabelResponse, List, ResourceRef, Stored};
use microseg_controller::resources::WORKLOAD;
use microseg_policy::Workload;

use super::output::{cell, esc, labels, print, Report};
use super::policy::named_in;
use super::{
    call, check_name, client, delete_all, finish, get_one, selector, send_json, show_list,
    ClientArgs, CommandError, Out, ReportArgs, ShowArgs,
};

#[derive(Subcommand)]
pub enum WorkloadCommand {
    /// Workloads known to the controller (applied and discovered) with their labels.
    List {
        /// Only workloads whose labels match: key=value, key!=value, key, !key,
        /// comma-separated (all must hold).
        #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
        selector: Option<String>,
        #[command(flatten)]
        show: ShowArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// One workload.
    Get {
        /// The workload's name.
        name: String,
        #[command(flatten)]
        show: ShowArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set labels: KEY=VALUE sets (KEY= sets the empty value), KEY- removes. On a
    /// discovered workload these labels win over the agent's and persist.
    Label {
        /// The workload's name.
        name: String,
        /// The changes: KEY=VALUE sets, KEY- removes.
        #[arg(required = true, value_name = "KEY=VALUE|KEY-")]
        labels: Vec<String>,
        #[command(flatten)]
        report: ReportArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete workloads created through the API: all that are named, or none.
    #[command(group = clap::ArgGroup::new("what").required(true).multiple(true))]
    Delete {
        /// Workloads to delete.
        #[arg(value_name = "NAME", group = "what")]
        names: Vec<String>,
        /// Also delete the Workloads these files or directories name (- reads standard
        /// input).
        #[arg(short = 'f', long = "file", num_args = 1.., value_name = "FILE", group = "what")]
        files: Vec<PathBuf>,
        /// Show what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        report: ReportArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
}

const HEADER: &[&str] = &["NAME", "NODE", "IPS", "MODE", "LABELS"];
const WIDE_HEADER: &[&str] = &[
    "NAME",
    "NODE",
    "INTERFACE",
    "IPS",
    "MODE",
    "LABELS",
    "REVISION",
];

fn workload_rows(
    items: &[Stored<Workload>],
    wide: bool,
) -> (&'static [&'static str], Vec<Vec<String>>) {
    let rows = items
        .iter()
        .map(|stored| {
            let w = &stored.resource;
            let ips: Vec<String> = w.ips.iter().map(ToString::to_string).collect();
            let ips = if ips.is_empty() {
                "-".into()
            } else {
                ips.join(",")
            };
            let (name, node) = (cell(&w.name), cell(stored.node.as_deref().unwrap_or("")));
            let (mode, labels) = (w.mode.to_string(), labels(&w.labels));
            if wide {
                let interface = cell(w.interface.as_deref().unwrap_or(""));
                let revision = stored.revision.to_string();
                vec![name, node, interface, ips, mode, labels, revision]
            } else {
                vec![name, node, ips, mode, labels]
            }
        })
        .collect();
    (if wide { WIDE_HEADER } else { HEADER }, rows)
}

/// KEY=VALUE sets, KEY- removes.
fn label_changes(args: &[String]) -> Result<BTreeMap<String, Option<String>>, CommandError> {
    let mut m = BTreeMap::new();
    for a in args {
        if let Some((k, v)) = a.split_once('=') {
            m.insert(k.to_string(), Some(v.to_string()));
        } else if let Some(k) = a.strip_suffix('-') {
            m.insert(k.to_string(), None);
        } else {
            return Err(CommandError::LabelChange(a.clone()));
        }
    }
    Ok(m)
}

fn list(selector_text: Option<&str>, c: &ClientArgs, show: ShowArgs) -> Out {
    let wanted = selector_text.map(selector::parse).transpose()?;
    let list: List<Stored<Workload>> = call(&client(c)?, "GET", "/v1/workloads", None)?;
    let mut items = list.items;
    if let Some(wanted) = wanted {
        items.retain(|w| wanted.matches(&w.resource.labels));
    }
    show_list(list.revision, items, show.output, workload_rows);
    Ok(())
}

fn label(name: &str, labels: &[String], c: &ClientArgs, out: Report) -> Out {
    check_name(name)?;
    let request = LabelRequest {
        labels: label_changes(labels)?,
    };
    let path = format!("/v1/workloads/{name}/labels");
    let r: LabelResponse = send_json(&client(c)?, "PUT", &path, &request)?;
    match out {
        Report::Table => outln!(
            "workload/{name} labeled (revision {}): {}",
            r.revision,
            esc(&super::output::labels(&r.labels))
        ),
        Report::Json => print(&r, false),
    }
    Ok(())
}

pub fn workload(cmd: WorkloadCommand) -> ExitCode {
    finish(match cmd {
        WorkloadCommand::List {
            selector,
            show,
            client,
        } => list(selector.as_deref(), &client, show),
        WorkloadCommand::Get { name, show, client } => check_name(&name).and_then(|_| {
            get_one(
                &client,
                &format!("/v1/workloads/{name}"),
                show.output,
                workload_rows,
            )
        }),
        WorkloadCommand::Delete {
            names,
            files,
            dry_run,
            report,
            client,
        } => (|| {
            let mut refs: Vec<ResourceRef> = names
                .iter()
                .map(|n| ResourceRef {
                    kind: WORKLOAD.to_string(),
                    name: n.clone(),
                })
                .collect();
            refs.extend(named_in(&files, Some(WORKLOAD))?);
            delete_all(&client, refs, dry_run, report.output)
        })(),
        WorkloadCommand::Label {
            name,
            labels,
            report,
            client,
        } => label(&name, &labels, &client, report.output),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_set_and_remove() {
        let m = label_changes(&["a=1".into(), "b=".into(), "c-".into()])
            .ok()
            .unwrap();
        let body = serde_json::to_value(LabelRequest { labels: m }).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"labels": {"a": "1", "b": "", "c": null}})
        );
        assert!(label_changes(&["nope".into()]).is_err());
    }
}
