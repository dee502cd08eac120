//! `policy apply`, `list`, `get`, `delete` and `promote` against the controller; `list`
//! and `get` show each recommended policy's lifecycle state (docs/RECOMMEND.md).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use microseg_controller::api_types::{
    ApplyFilesRequest, ApplyResponse, List, ResourceRef, SourceFile, Stored,
};
use microseg_controller::resources;
use microseg_policy::{Policy, Workload};

use super::output::{cell, esc, print, rules_summary, selector, table, Output, Report};
use super::{
    call, check_name, client, delete_all, dry_run_path, finish, invalid, resource_ref,
    selector as label_selector, send_json, show_list, ClientArgs, CommandError,
};
use microseg_controller::client::Client;

fn rules<T>(section: &Option<Vec<T>>) -> String {
    match section {
        Some(rules) => rules.len().to_string(),
        None => "-".into(),
    }
}

const HEADER: &[&str] = &[
    "NAME", "PRIORITY", "MODE", "STATE", "SELECTOR", "INGRESS", "EGRESS", "REVISION",
];
const WIDE_HEADER: &[&str] = &[
    "NAME", "PRIORITY", "MODE", "STATE", "SELECTOR", "INGRESS", "EGRESS", "REVISION", "RULES",
];

/// Applied policies with this prefix are recommendations (`microseg recommend`).
const RECOMMENDED_PREFIX: &str = "recommended.";

/// Each recommended policy's state by name: `learning`, `stabilizing`, `stable`.
type States = BTreeMap<String, String>;

fn state_of(states: &States, name: &str) -> Option<String> {
    if !name.starts_with(RECOMMENDED_PREFIX) {
        return None;
    }
    // Unknown when the controller could not say (a note on stderr tells why).
    Some(states.get(name).cloned().unwrap_or_else(|| "?".into()))
}

/// The states of the applied recommended policies from `GET /v1/recommendations`, only
/// asked when some of `names` are recommendations; a failure is a note, not an error.
fn states<'a>(cl: &Client, mut names: impl Iterator<Item = &'a str>) -> States {
    if !names.any(|n| n.starts_with(RECOMMENDED_PREFIX)) {
        return States::new();
    }
    match call::<serde_json::Value>(cl, "GET", "/v1/recommendations", None) {
        Ok(v) => v["applied"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| Some((a["name"].as_str()?.into(), a["state"].as_str()?.into())))
            .collect(),
        Err(e) => {
            eprintln!(
                "note: the states of recommended policies are unknown: {}",
                esc(&e.to_string())
            );
            States::new()
        }
    }
}

fn policy_table(
    items: &[Stored<Arc<Policy>>],
    wide: bool,
    states: &States,
) -> (&'static [&'static str], Vec<Vec<String>>) {
    let rows = items
        .iter()
        .map(|stored| {
            let p = &stored.resource;
            let mut row = vec![
                cell(&p.name),
                p.priority.to_string(),
                p.mode.to_string(),
                state_of(states, &p.name).unwrap_or_else(|| "-".into()),
                selector(&p.selector),
                rules(&p.ingress),
                rules(&p.egress),
                stored.revision.to_string(),
            ];
            if wide {
                row.push(rules_summary(p));
            }
            row
        })
        .collect();
    (if wide { WIDE_HEADER } else { HEADER }, rows)
}

fn policy_rows(
    items: &[Stored<Arc<Policy>>],
    wide: bool,
) -> (&'static [&'static str], Vec<Vec<String>>) {
    policy_table(items, wide, &States::new())
}

/// Policies as `out` asks, with their states: a column of the table, `state` in JSON
/// (null for a policy that is no recommendation); YAML stays what `apply -f` takes.
fn show_policies(revision: u64, items: Vec<Stored<Arc<Policy>>>, out: Output, states: &States) {
    match out {
        Output::Table | Output::Wide => {
            let (header, rows) = policy_table(&items, out == Output::Wide, states);
            table(header, &rows);
        }
        Output::Json => {
            let mut v = serde_json::to_value(List { items, revision }).unwrap_or_default();
            for it in v["items"].as_array_mut().into_iter().flatten() {
                let name = it["metadata"]["name"].as_str().unwrap_or_default();
                it["state"] = state_of(states, name).into();
            }
            print(&v, false);
        }
        Output::Yaml => show_list(revision, items, out, policy_rows),
    }
}

/// `policy apply -f`: every file checked here first, then all of them in one request,
/// which the controller applies as one transaction (one revision) or not at all.
pub fn apply(files: &[PathBuf], dry_run: bool, c: &ClientArgs, out: Report) -> ExitCode {
    finish((|| {
        let sources = crate::sources::read(files).map_err(invalid("; nothing applied"))?;
        if sources.is_empty() {
            return Err(CommandError::NoFiles);
        }
        crate::sources::resources(&sources).map_err(invalid("; nothing applied"))?;
        let files: Vec<SourceFile> = sources
            .into_iter()
            .map(|s| SourceFile {
                content: s.text,
                name: s.name,
            })
            .collect();
        let path = dry_run_path("/v1/apply/files", dry_run);
        let request = ApplyFilesRequest { files };
        let body: ApplyResponse = send_json(&client(c)?, "POST", &path, &request)?;
        if out == Report::Json {
            print(&body, false);
            return Ok(());
        }
        let suffix = if dry_run { " (dry run)" } else { "" };
        for a in &body.applied {
            outln!("{} {}{suffix}", resource_ref(&a.kind, &a.name), a.action);
        }
        if !dry_run {
            outln!("revision {}", body.revision);
        }
        Ok(())
    })())
}

/// `policy list [-l SELECTOR]`: with a selector, the policies that select at least one
/// stored workload the selector matches (Policies carry no labels of their own).
pub fn policy_list(labels: Option<&str>, c: &ClientArgs, out: Output) -> ExitCode {
    finish((|| {
        let wanted = labels.map(label_selector::parse).transpose()?;
        let cl = client(c)?;
        let policies: List<Stored<Arc<Policy>>> = call(&cl, "GET", "/v1/policies", None)?;
        let mut items = policies.items;
        if let Some(wanted) = wanted {
            let workloads: List<Stored<Workload>> = call(&cl, "GET", "/v1/workloads", None)?;
            let chosen: Vec<_> = workloads
                .items
                .iter()
                .map(|w| &w.resource.labels)
                .filter(|l| wanted.matches(l))
                .collect();
            items.retain(|p| chosen.iter().any(|l| p.resource.selector.matches(l)));
        }
        let states = states(&cl, items.iter().map(|p| p.resource.name.as_str()));
        show_policies(policies.revision, items, out, &states);
        Ok(())
    })())
}

pub fn policy_get(name: &str, c: &ClientArgs, out: Output) -> ExitCode {
    finish((|| {
        check_name(name)?;
        let cl = client(c)?;
        let stored: Stored<Arc<Policy>> = call(&cl, "GET", &format!("/v1/policies/{name}"), None)?;
        match out {
            // One document, as before: `apply -f` takes it back.
            Output::Yaml => print(&stored, true),
            Output::Json => print(&stored, false),
            Output::Table | Output::Wide => {
                let states = states(&cl, std::iter::once(name));
                show_policies(stored.revision, vec![stored], out, &states);
            }
        }
        Ok(())
    })())
}

/// `policy promote NAME`: an audit policy made enforcing on the controller, as one change
/// (a new revision); exit 2 when it does not exist (404) or is not in audit mode (409).
pub fn policy_promote(name: &str, dry_run: bool, c: &ClientArgs, out: Report) -> ExitCode {
    finish((|| {
        check_name(name)?;
        let path = dry_run_path(&format!("/v1/policies/{name}/promote"), dry_run);
        let body: ApplyResponse = call(&client(c)?, "POST", &path, None)?;
        if out == Report::Json {
            print(&body, false);
            return Ok(());
        }
        if dry_run {
            outln!(
                "{} would be promoted to enforce (dry run)",
                resource_ref(resources::POLICY, name)
            );
        } else {
            outln!(
                "{} promoted to enforce",
                resource_ref(resources::POLICY, name)
            );
            outln!("revision {}", body.revision);
        }
        Ok(())
    })())
}

/// `policy delete NAME...` or `-f FILE...` (every resource the files name, as `policy
/// apply -f` applies them all), in one request.
pub fn policy_delete(
    names: &[String],
    files: &[PathBuf],
    dry_run: bool,
    c: &ClientArgs,
    out: Report,
) -> ExitCode {
    finish((|| {
        let mut refs: Vec<ResourceRef> = names
            .iter()
            .map(|n| ResourceRef {
                kind: resources::POLICY.to_string(),
                name: n.clone(),
            })
            .collect();
        refs.extend(named_in(files, None)?);
        delete_all(c, refs, dry_run, out)
    })())
}

/// Every resource the files name (of `kind` only, if given).
pub(super) fn named_in(
    files: &[PathBuf],
    kind: Option<&str>,
) -> Result<Vec<ResourceRef>, CommandError> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let res = crate::sources::load(files).map_err(invalid("; nothing deleted"))?;
    Ok(res
        .iter()
        .filter(|r| kind.is_none_or(|k| k == resources::kind(r)))
        .map(|r| ResourceRef {
            kind: resources::kind(r).to_string(),
            name: resources::name(r).to_string(),
        })
        .collect())
}
