//! `policy apply`, `list`, `get` and `delete` against the controller.

use std::path::PathBuf;
use std::process::ExitCode;

use microseg_controller::resources;
use microseg_policy::{Resource, API_VERSION};
use serde_json::{json, Value};

use super::output::{esc, print, rules_summary, selector, text, Output, Report};
use super::{
    call, check_name, client, delete_all, diagnostics, dry_run_path, finish, get_one, post_json,
    resource_ref, selector as label_selector, show_list, ClientArgs, Fail,
};

fn revision_of(item: &Value) -> String {
    text(&item["metadata"]["annotations"]["microseg.io/revision"])
}

fn rules(v: &Value) -> String {
    match v.as_array() {
        Some(a) => a.len().to_string(),
        None => "-".into(),
    }
}

const HEADER: &[&str] = &[
    "NAME", "PRIORITY", "MODE", "SELECTOR", "INGRESS", "EGRESS", "REVISION",
];
const WIDE_HEADER: &[&str] = &[
    "NAME", "PRIORITY", "MODE", "SELECTOR", "INGRESS", "EGRESS", "REVISION", "RULES",
];

fn policy_rows(items: &[Value], wide: bool) -> (&'static [&'static str], Vec<Vec<String>>) {
    let rows = items
        .iter()
        .map(|p| {
            let mut row = vec![
                text(&p["metadata"]["name"]),
                text(&p["spec"]["priority"]),
                text(&p["spec"]["mode"]),
                selector(&p["spec"]["selector"]),
                rules(&p["spec"]["ingress"]),
                rules(&p["spec"]["egress"]),
                revision_of(p),
            ];
            if wide {
                row.push(rules_summary(&p["spec"]));
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
        let sources =
            crate::sources::read(files).map_err(|d| diagnostics(&d, "; nothing applied"))?;
        if sources.is_empty() {
            let msg = "error: no *.yaml, *.yml or *.json file in what -f names; nothing applied";
            return Err(Fail(msg.into(), 2));
        }
        crate::sources::resources(&sources).map_err(|d| diagnostics(&d, "; nothing applied"))?;
        let files: Vec<Value> = sources
            .iter()
            .map(|s| json!({"name": s.name, "content": s.text}))
            .collect();
        let path = dry_run_path("/v1/apply/files", dry_run);
        let body = post_json(&client(c)?, &path, &json!({ "files": files }))?;
        if out == Report::Json {
            print(&body, false);
            return Ok(());
        }
        let suffix = if dry_run { " (dry run)" } else { "" };
        for a in body["applied"].as_array().into_iter().flatten() {
            outln!("{} {}{suffix}", resource_ref(a), esc(&text(&a["action"])));
        }
        if !dry_run {
            outln!("revision {}", text(&body["revision"]));
        }
        Ok(())
    })())
}

/// `policy list [-l SELECTOR]`: with a selector, the policies that select at least one
/// stored workload the selector matches (Policies carry no labels of their own).
pub fn policy_list(labels: Option<&str>, c: &ClientArgs, out: Output) -> ExitCode {
    finish((|| {
        let wanted = labels
            .map(label_selector::parse)
            .transpose()
            .map_err(|e| Fail(format!("error: {}", esc(&e)), 2))?;
        let cl = client(c)?;
        let body = call(&cl, "GET", "/v1/policies", None)?;
        let mut items = body["items"].as_array().cloned().unwrap_or_default();
        if let Some(wanted) = wanted {
            let workloads = call(&cl, "GET", "/v1/workloads", None)?;
            let chosen: Vec<_> = workloads["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(label_selector::labels_of)
                .filter(|l| wanted.matches(l))
                .collect();
            items.retain(|p| {
                let Some(sel) = policy_selector(p) else {
                    return false;
                };
                chosen.iter().any(|l| sel.matches(l))
            });
        }
        show_list(&body, items, out, policy_rows);
        Ok(())
    })())
}

/// A stored Policy's selector, read by the policy parser.
fn policy_selector(doc: &Value) -> Option<microseg_policy::LabelSelector> {
    let spec = json!({
        "apiVersion": API_VERSION,
        "kind": resources::POLICY,
        "metadata": {"name": doc["metadata"]["name"]},
        "spec": doc["spec"],
    });
    let (res, _) = microseg_policy::parse_str("stored", &spec.to_string());
    match res.into_iter().next() {
        Some(Resource::Policy(p)) => Some(p.selector.clone()),
        _ => None,
    }
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
        let mut refs: Vec<(String, String)> = names
            .iter()
            .map(|n| (resources::POLICY.to_string(), n.clone()))
            .collect();
        refs.extend(named_in(files, None)?);
        delete_all(c, &refs, dry_run, out)
    })())
}

/// The `(kind, name)` of every resource the files name (of `kind` only, if given).
pub(super) fn named_in(
    files: &[PathBuf],
    kind: Option<&str>,
) -> Result<Vec<(String, String)>, Fail> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let res = crate::sources::load(files).map_err(|d| diagnostics(&d, "; nothing deleted"))?;
    Ok(res
        .iter()
        .filter(|r| kind.is_none_or(|k| k == resources::kind(r)))
        .map(|r| {
            (
                resources::kind(r).to_string(),
                resources::name(r).to_string(),
            )
        })
        .collect())
}
