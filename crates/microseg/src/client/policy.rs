//! `policy apply`, `list`, `get` and `delete` against the controller.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use microseg_controller::api_types::{
    ApplyFilesRequest, ApplyResponse, List, ResourceRef, SourceFile, Stored,
};
use microseg_controller::resources;
use microseg_policy::{Policy, Workload};

use super::output::{cell, print, rules_summary, selector, Output, Report};
use super::{
    call, check_name, client, delete_all, dry_run_path, finish, get_one, invalid, resource_ref,
    selector as label_selector, send_json, show_list, ClientArgs, CommandError,
};

fn rules<T>(section: &Option<Vec<T>>) -> String {
    match section {
        Some(rules) => rules.len().to_string(),
        None => "-".into(),
    }
}

const HEADER: &[&str] = &[
    "NAME", "PRIORITY", "MODE", "SELECTOR", "INGRESS", "EGRESS", "REVISION",
];
const WIDE_HEADER: &[&str] = &[
    "NAME", "PRIORITY", "MODE", "SELECTOR", "INGRESS", "EGRESS", "REVISION", "RULES",
];

fn policy_rows(
    items: &[Stored<Arc<Policy>>],
    wide: bool,
) -> (&'static [&'static str], Vec<Vec<String>>) {
    let rows = items
        .iter()
        .map(|stored| {
            let p = &stored.resource;
            let mut row = vec![
                cell(&p.name),
                p.priority.to_string(),
                p.mode.to_string(),
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
        show_list(policies.revision, items, out, policy_rows);
        Ok(())
    })())
}

pub fn policy_get(name: &str, c: &ClientArgs, out: Output) -> ExitCode {
    finish(
        check_name(name)
            .and_then(|_| get_one(c, &format!("/v1/policies/{name}"), out, policy_rows)),
    )
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
