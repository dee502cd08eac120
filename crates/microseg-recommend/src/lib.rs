//! Least-privilege Policies from observed flows (docs/RECOMMEND.md): pure, no I/O.
//!
//! Input: the flow record's edges of a window, the current Workloads and Policies, and
//! the options. Output: one Policy per group of workloads (ingress and egress sections,
//! both always present), each rule with its evidence, and a preview that replays the
//! window through the reference evaluator.

mod group;
mod local;
mod output;
mod preview;
mod rules;
mod state;

use std::collections::BTreeMap;
use std::sync::Arc;

use microseg_flowstore::{Edge, Selector, Timestamp, Verdict};
use microseg_policy::{Mode, Policy, Workload};

pub use group::{GroupKey, PER_INSTANCE_LABELS};
pub use local::{edges_from_legs, Leg};
pub use output::{document, documents, policy_yaml, to_json_list, to_yaml, GROUP_ANNOTATION};
pub use preview::{preview, PolicyPreview, Preview};
pub use state::{policy_states, State};

/// What to recommend.
#[derive(Debug, Clone)]
pub struct Options {
    /// Label keys whose values define a group (`--group-by`); default `app`.
    pub group_by: Vec<String>,
    /// Only groups with a workload whose labels match (`--selector`).
    pub selector: Option<Selector>,
    /// `mode` of the proposed policies (`audit` unless `--mode enforce`).
    pub mode: Mode,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            group_by: vec!["app".into()],
            selector: None,
            mode: Mode::Audit,
        }
    }
}

/// What the recommendation is made from.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub edges: &'a [Edge],
    /// The current Workloads (with addresses); workloads seen only in edges are added
    /// with the labels the edges carry.
    pub workloads: &'a [Workload],
    pub policies: &'a [Arc<Policy>],
}

/// Why there is nothing to recommend: bad input, never an allow-everything policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("the window holds no flows: nothing was observed, so nothing can be recommended (widen --since, or check that agents upload flows)")]
    EmptyWindow,
    #[error("the window holds only denied traffic ({edges} edges, {connections} connections): a denied path is no evidence that it is wanted, so nothing is recommended")]
    OnlyDenied { edges: usize, connections: u64 },
    #[error("--group-by needs at least one label key")]
    NoGroupKeys,
    #[error("--group-by {key}: no workload has this label (keys seen: {})", if .known.is_empty() { "none".to_string() } else { .known.join(", ") })]
    UnknownGroupKey { key: String, known: Vec<String> },
    #[error("--group-by {key}: a per-instance label (unique per workload) never becomes a selector; group by a label that replicas share, such as app")]
    PerInstanceKey { key: String },
    #[error("--selector {selector}: no workload seen in the window's allowed traffic matches")]
    NoneSelected { selector: String },
}

/// What one rule rests on: the edges it was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    pub connections: u64,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    /// The latest `first_seen` of its edges: when a path it allows last appeared.
    pub newest: Timestamp,
    /// Where the rule is wider than what was seen (a summarised prefix, a port range).
    pub notes: Vec<String>,
}

impl Evidence {
    fn of(e: &Edge) -> Evidence {
        Evidence {
            connections: e.connections,
            first_seen: e.first_seen,
            last_seen: e.last_seen,
            newest: e.first_seen,
            notes: Vec::new(),
        }
    }

    fn add(&mut self, o: &Evidence) {
        self.connections += o.connections;
        self.first_seen = self.first_seen.min(o.first_seen);
        self.last_seen = self.last_seen.max(o.last_seen);
        self.newest = self.newest.max(o.newest);
    }
}

/// One proposed policy and the evidence of each of its rules (same order as the rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposed {
    pub policy: Policy,
    pub group: GroupKey,
    /// The group's workloads seen in the window, sorted.
    pub members: Vec<String>,
    pub ingress: Vec<Evidence>,
    pub egress: Vec<Evidence>,
}

/// The proposed policies, sorted by name, and what the caller should tell the user.
#[derive(Debug, Clone)]
pub struct Recommendation {
    pub policies: Vec<Proposed>,
    pub group_by: Vec<String>,
    /// Edges (and their connections) denied by policy: reported, never allowed.
    pub denied_edges: usize,
    pub denied_connections: u64,
    /// Messages for the user: workloads without the grouping labels, what was left out.
    pub notes: Vec<String>,
    /// Workloads as the preview judges them (with addresses for those that had none).
    pub(crate) world: group::World,
}

/// Whether an edge is observed traffic that passed (allow, log, audit).
pub fn passed(v: Verdict) -> bool {
    !matches!(v, Verdict::Deny)
}

/// The recommendation for `input` (docs/RECOMMEND.md "Algorithm").
pub fn recommend(input: Input<'_>, opts: &Options) -> Result<Recommendation, Error> {
    if input.edges.is_empty() {
        return Err(Error::EmptyWindow);
    }
    let (passed_edges, denied): (Vec<&Edge>, Vec<&Edge>) =
        input.edges.iter().partition(|e| passed(e.verdict));
    let denied_connections = denied.iter().map(|e| e.connections).sum();
    if passed_edges.is_empty() {
        return Err(Error::OnlyDenied {
            edges: denied.len(),
            connections: denied_connections,
        });
    }
    let world = group::World::resolve(input, &opts.group_by)?;
    let mut notes = world.notes.clone();
    let proposed = rules::build(&world, &passed_edges, opts, &mut notes)?;
    if !denied.is_empty() {
        notes.push(format!(
            "{} denied edges ({denied_connections} connections) were left out: denied traffic is no evidence that a path is wanted",
            denied.len()
        ));
    }
    let mut policies: Vec<Proposed> = proposed;
    policies.sort_by(|a, b| a.policy.name.cmp(&b.policy.name));
    Ok(Recommendation {
        policies,
        group_by: opts.group_by.clone(),
        denied_edges: denied.len(),
        denied_connections,
        notes,
        world,
    })
}

/// The proposed policies by name.
impl Recommendation {
    pub fn by_name(&self) -> BTreeMap<&str, &Proposed> {
        self.policies
            .iter()
            .map(|p| (p.policy.name.as_str(), p))
            .collect()
    }
}

#[cfg(test)]
mod tests;
