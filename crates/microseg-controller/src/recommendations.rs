//! `GET /v1/recommendations`: the recommender (crates/microseg-recommend) run on the flow
//! record's edges of a window against the stored workloads and policies, with the
//! preview of each proposed policy, its diff against the applied policy of the same
//! name, and the lifecycle state of each applied recommended policy (docs/RECOMMEND.md
//! "Lifecycle", docs/CONTROLLER.md).

use crate::apply::compute;
use crate::core::Core;
use crate::error::Error;
use crate::resources::{policy_json, WORKLOAD};
use microseg_flowstore::{Edge, EdgeWindow, Timestamp};
use microseg_policy::{Policy, Resource, Workload};
use microseg_recommend::{Input, Options, PolicyPreview, Proposed, State};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Applied policies with this name prefix are recommendations (stored policies keep no
/// annotations, so the name is what marks them).
pub const RECOMMENDED_PREFIX: &str = "recommended.";
const DEFAULT_WINDOW: &str = "24h";

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommendParams {
    since: Option<String>,
    /// Comma-separated label keys (default `app`).
    group_by: Option<String>,
}

/// A rule of the proposed policy missing from the applied one (added), or the reverse.
#[derive(Debug, Serialize)]
pub struct RuleChange {
    pub direction: &'static str,
    pub rule: Value,
}

#[derive(Debug, Serialize)]
pub struct PolicyDiff {
    /// `new` (not applied), `changed` or `unchanged`.
    pub status: &'static str,
    /// The applied policy's mode, when there is one.
    pub applied_mode: Option<String>,
    pub selector_changed: bool,
    pub added: Vec<RuleChange>,
    pub removed: Vec<RuleChange>,
}

#[derive(Debug, Serialize)]
pub struct ProposedPolicy {
    pub name: String,
    /// The Policy resource with its evidence annotations.
    pub policy: Value,
    /// The same as YAML, as `microseg recommend` writes it.
    pub yaml: String,
    pub preview: Option<PolicyPreview>,
    pub diff: PolicyDiff,
}

#[derive(Debug, Serialize)]
pub struct AppliedRecommendation {
    pub name: String,
    pub mode: String,
    pub revision: u64,
    pub state: State,
    /// When a path its group uses was last seen for the first time in the window.
    pub last_new_edge: Option<String>,
    /// Whether the window still proposes a policy of this name.
    pub proposed: bool,
}

#[derive(Debug, Serialize)]
pub struct Recommendations {
    pub since: String,
    pub group_by: Vec<String>,
    pub quiet_seconds: f64,
    /// The resources' revision the recommendation was made against.
    pub revision: u64,
    pub proposed: Vec<ProposedPolicy>,
    pub applied: Vec<AppliedRecommendation>,
    pub denied_edges: usize,
    pub denied_connections: u64,
    /// What the user should know: the recommender's notes, or why nothing is proposed.
    pub notes: Vec<String>,
}

fn flow_error(e: microseg_flowstore::Error) -> Error {
    let status = match &e {
        microseg_flowstore::Error::BadFilter(_) => 400,
        e if e.is_unavailable() => 503,
        _ => 500,
    };
    Error::http(status, crate::flow_ingest::chain(&e))
}

pub async fn recommendations(c: &Core, q: RecommendParams) -> Result<Recommendations, Error> {
    let now = Timestamp::now();
    let since = q.since.unwrap_or_else(|| DEFAULT_WINDOW.into());
    let window = EdgeWindow::from_params([("since", since.as_str())], now)
        .map_err(|e| Error::bad(e.to_string()))?;
    let group_by: Vec<String> = q
        .group_by
        .as_deref()
        .unwrap_or("app")
        .split(',')
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .collect();
    let flows = c.flows.store().map_err(|why| Error::http(503, why))?;
    let edges = flows.edges(&window).await.map_err(flow_error)?;
    let (revision, rows) = c.store.full().await?;
    let mut workloads = Vec::new();
    let mut policies = Vec::new();
    for r in &rows {
        match r.resource()? {
            Resource::Workload(w) if r.kind == WORKLOAD => workloads.push(w.clone()),
            Resource::Policy(p) => policies.push((p.clone(), r.revision)),
            _ => {}
        }
    }
    let quiet = c.recommend_quiet;
    let world = World {
        edges,
        workloads,
        policies,
    };
    let mut out = compute(move || build(world, group_by, now, quiet)).await??;
    out.since = since;
    out.revision = revision;
    Ok(out)
}

struct World {
    edges: Vec<Edge>,
    workloads: Vec<Workload>,
    policies: Vec<(Arc<Policy>, u64)>,
}

fn build(
    w: World,
    group_by: Vec<String>,
    now: Timestamp,
    quiet: Duration,
) -> Result<Recommendations, Error> {
    let current: Vec<Arc<Policy>> = w.policies.iter().map(|(p, _)| p.clone()).collect();
    let opts = Options {
        group_by: group_by.clone(),
        ..Options::default()
    };
    let input = Input {
        edges: &w.edges,
        workloads: &w.workloads,
        policies: &current,
    };
    let mut out = Recommendations {
        since: String::new(),
        group_by,
        quiet_seconds: quiet.as_secs_f64(),
        revision: 0,
        proposed: Vec::new(),
        applied: Vec::new(),
        denied_edges: 0,
        denied_connections: 0,
        notes: Vec::new(),
    };
    let rec = match microseg_recommend::recommend(input, &opts) {
        Ok(rec) => Some(rec),
        // Nothing to learn from: no proposal, and every applied recommendation is quiet.
        Err(
            e @ (microseg_recommend::Error::EmptyWindow
            | microseg_recommend::Error::OnlyDenied { .. }),
        ) => {
            out.notes.push(e.to_string());
            None
        }
        Err(e) => return Err(Error::bad(e.to_string())),
    };
    let applied: BTreeMap<&str, &(Arc<Policy>, u64)> = w
        .policies
        .iter()
        .map(|pr| (pr.0.name.as_str(), pr))
        .collect();
    let mut states = BTreeMap::new();
    let mut newest = BTreeMap::new();
    if let Some(rec) = &rec {
        out.denied_edges = rec.denied_edges;
        out.denied_connections = rec.denied_connections;
        out.notes.extend(rec.notes.iter().cloned());
        let preview = microseg_recommend::preview(rec, &w.edges, &current);
        let mut previews: BTreeMap<String, PolicyPreview> = preview
            .policies
            .into_iter()
            .map(|p| (p.name.clone(), p))
            .collect();
        states.extend(microseg_recommend::policy_states(rec, now, quiet));
        for p in &rec.policies {
            newest.insert(p.policy.name.clone(), newest_edge(p));
            out.proposed.push(ProposedPolicy {
                name: p.policy.name.clone(),
                policy: microseg_recommend::document(p, &rec.group_by),
                yaml: microseg_recommend::policy_yaml(p, &rec.group_by),
                preview: previews.remove(&p.policy.name),
                diff: diff(
                    &p.policy,
                    applied.get(p.policy.name.as_str()).map(|a| &*a.0),
                ),
            });
        }
    }
    for (name, (p, revision)) in &applied {
        if !name.starts_with(RECOMMENDED_PREFIX) {
            continue;
        }
        out.applied.push(AppliedRecommendation {
            name: name.to_string(),
            mode: p.mode.to_string(),
            revision: *revision,
            // No edge of its group in the window: no new path appeared in it.
            state: states.get(*name).copied().unwrap_or(State::Stable),
            last_new_edge: newest.get(*name).cloned().flatten(),
            proposed: states.contains_key(*name),
        });
    }
    Ok(out)
}

/// The latest time a path the proposed policy allows was first seen.
fn newest_edge(p: &Proposed) -> Option<String> {
    p.ingress
        .iter()
        .chain(&p.egress)
        .map(|e| e.newest)
        .max()
        .map(|t| t.to_string())
}

/// The rules of one section as the API writes them.
fn rules(doc: &Value, section: &str) -> Vec<Value> {
    doc["spec"][section].as_array().cloned().unwrap_or_default()
}

/// What applying `proposed` would change in `applied`: rules added and removed per
/// direction (compared as the API writes them), and whether the selector moves.
pub fn diff(proposed: &Policy, applied: Option<&Policy>) -> PolicyDiff {
    let new_doc = policy_json(proposed);
    let Some(applied) = applied else {
        let mut added = Vec::new();
        for direction in ["ingress", "egress"] {
            added.extend(
                rules(&new_doc, direction)
                    .into_iter()
                    .map(|rule| RuleChange { direction, rule }),
            );
        }
        return PolicyDiff {
            status: "new",
            applied_mode: None,
            selector_changed: false,
            added,
            removed: Vec::new(),
        };
    };
    let old_doc = policy_json(applied);
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    for direction in ["ingress", "egress"] {
        let (new, old) = (rules(&new_doc, direction), rules(&old_doc, direction));
        for rule in &new {
            if !old.contains(rule) {
                added.push(RuleChange {
                    direction,
                    rule: rule.clone(),
                });
            }
        }
        for rule in old {
            if !new.contains(&rule) {
                removed.push(RuleChange { direction, rule });
            }
        }
    }
    let selector_changed = new_doc["spec"]["selector"] != old_doc["spec"]["selector"]
        || proposed.priority != applied.priority;
    let status = if added.is_empty() && removed.is_empty() && !selector_changed {
        "unchanged"
    } else {
        "changed"
    };
    PolicyDiff {
        status,
        applied_mode: Some(applied.mode.to_string()),
        selector_changed,
        added,
        removed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Policy {
        let (r, d) = microseg_policy::parse_str("p.yaml", text);
        assert!(d.is_empty(), "{d:?}");
        match &r[0] {
            Resource::Policy(p) => (**p).clone(),
            _ => panic!("a policy"),
        }
    }

    #[test]
    fn the_diff_names_added_and_removed_rules_per_direction() {
        let head = "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {name: recommended.db}\nspec:\n  selector: {matchLabels: {app: db}}\n  mode: audit\n";
        let web = "    - action: allow\n      from: [{selector: {matchLabels: {app: web}}}]\n      ports: [{protocol: TCP, port: 5432}]\n";
        let batch = "    - action: allow\n      from: [{selector: {matchLabels: {app: batch}}}]\n      ports: [{protocol: TCP, port: 5432}]\n";
        let proposed = policy(&format!("{head}  ingress:\n{web}{batch}  egress: []\n"));
        let applied = policy(&format!("{head}  ingress:\n{web}  egress: []\n"));
        let d = diff(&proposed, Some(&applied));
        assert_eq!(d.status, "changed");
        assert_eq!(d.added.len(), 1);
        assert_eq!(d.added[0].direction, "ingress");
        assert_eq!(
            d.added[0].rule["from"][0]["selector"]["matchLabels"]["app"],
            "batch"
        );
        assert!(d.removed.is_empty());
        let back = diff(&applied, Some(&proposed));
        assert_eq!((back.added.len(), back.removed.len()), (0, 1));
        assert_eq!(diff(&proposed, Some(&proposed)).status, "unchanged");
        let new = diff(&proposed, None);
        assert_eq!((new.status, new.added.len()), ("new", 2));
    }
}
