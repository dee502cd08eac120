//! Workloads and their groups: which labels may become selectors, and each group's name
//! and selector (docs/RECOMMEND.md "Groups").

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use microseg_flowstore::{Endpoint, Labels};
use microseg_policy::{LabelSelector, Operator, Requirement};

use crate::{Error, Input};

/// Labels that name one instance (a namespace, a node, a replica's hash): never a
/// selector, since a policy on them would not follow a rescheduled or scaled workload.
pub const PER_INSTANCE_LABELS: &[&str] = &[
    "netns",
    "node",
    "pod-template-hash",
    "controller-revision-hash",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
    "kubernetes.io/hostname",
    "microseg.io/node",
];

/// A group: the values of the `--group-by` keys, and for a workload that lacks one of
/// them, its other stable labels (the group is named after what it has).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKey {
    /// Per `--group-by` key, in the order given: its value, or None when absent.
    pub values: Vec<Option<String>>,
    /// Only for a workload without every grouping label: its other stable labels.
    pub extra: BTreeMap<String, String>,
}

impl GroupKey {
    pub fn complete(&self) -> bool {
        self.values.iter().all(Option::is_some)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub labels: Labels,
    pub ips: Vec<IpAddr>,
    pub group: GroupKey,
}

/// Every workload (current, or seen only in the edges) with its group, and each group's
/// name and selector.
#[derive(Debug, Clone)]
pub(crate) struct World {
    pub members: BTreeMap<String, Member>,
    pub names: BTreeMap<GroupKey, String>,
    pub selectors: BTreeMap<GroupKey, LabelSelector>,
    pub notes: Vec<String>,
}

fn per_instance(key: &str, value: &str, workload: &str) -> bool {
    PER_INSTANCE_LABELS.contains(&key) || value == workload
}

impl World {
    pub fn resolve(input: Input<'_>, group_by: &[String]) -> Result<World, Error> {
        if group_by.is_empty() {
            return Err(Error::NoGroupKeys);
        }
        let mut labels: BTreeMap<String, (Labels, Vec<IpAddr>)> = input
            .workloads
            .iter()
            .map(|w| (w.name.clone(), (w.labels.clone(), w.ips.clone())))
            .collect();
        // Workloads gone since: the labels of their latest edge (ties broken by the
        // labels, so the input's order does not matter).
        let mut seen: BTreeMap<&str, (microseg_flowstore::Timestamp, &Labels)> = BTreeMap::new();
        for e in input.edges {
            for end in [&e.src, &e.dst] {
                if let Endpoint::Workload { workload, labels } = end {
                    let cand = (e.last_seen, labels);
                    let slot = seen.entry(workload).or_insert(cand);
                    if cand > *slot {
                        *slot = cand;
                    }
                }
            }
        }
        let mut notes = Vec::new();
        let mut gone = Vec::new();
        for (name, (_, l)) in seen {
            if !labels.contains_key(name) {
                gone.push(name.to_string());
                labels.insert(name.to_string(), (l.clone(), Vec::new()));
            }
        }
        if !gone.is_empty() && !input.workloads.is_empty() {
            notes.push(format!(
                "workloads seen in flows but no longer known, grouped by the labels of their flows: {}",
                gone.join(", ")
            ));
        }
        let known: BTreeSet<&str> = labels
            .values()
            .flat_map(|(l, _)| l.keys().map(String::as_str))
            .collect();
        for key in group_by {
            if PER_INSTANCE_LABELS.contains(&key.as_str()) {
                return Err(Error::PerInstanceKey { key: key.clone() });
            }
            if !known.contains(key.as_str()) {
                return Err(Error::UnknownGroupKey {
                    key: key.clone(),
                    known: known.iter().map(|k| k.to_string()).collect(),
                });
            }
        }
        let members: BTreeMap<String, Member> = labels
            .into_iter()
            .map(|(name, (labels, ips))| {
                let group = group_of(&name, &labels, group_by);
                (name, Member { labels, ips, group })
            })
            .collect();
        let groups: BTreeSet<&GroupKey> = members.values().map(|m| &m.group).collect();
        let names = names(&groups, group_by);
        let selectors = selectors(&groups, group_by);
        Ok(World {
            members,
            names,
            selectors,
            notes,
        })
    }

    pub fn group(&self, workload: &str) -> Option<&GroupKey> {
        self.members.get(workload).map(|m| &m.group)
    }
}

fn group_of(name: &str, labels: &Labels, group_by: &[String]) -> GroupKey {
    let values: Vec<Option<String>> = group_by.iter().map(|k| labels.get(k).cloned()).collect();
    let extra = if values.iter().all(Option::is_some) {
        BTreeMap::new()
    } else {
        labels
            .iter()
            .filter(|(k, v)| !group_by.contains(k) && !per_instance(k, v, name))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    GroupKey { values, extra }
}

/// Lowercase letters, digits, `-` and `.` only, as policy names need.
fn name_part(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '.') => c,
            _ => '-',
        })
        .collect();
    if t.is_empty() {
        "empty".into()
    } else {
        t
    }
}

const MAX_NAME: usize = 240;

/// `recommended.<values joined by '-'>`; a group without a grouping label is named
/// `no-<key>` for it, then its other labels as `key-value`. Unique: a repeat gets `-2`.
fn names(groups: &BTreeSet<&GroupKey>, group_by: &[String]) -> BTreeMap<GroupKey, String> {
    let mut taken = BTreeSet::new();
    let mut out = BTreeMap::new();
    for g in groups {
        let mut parts: Vec<String> = group_by
            .iter()
            .zip(&g.values)
            .map(|(k, v)| match v {
                Some(v) => name_part(v),
                None => format!("no-{}", name_part(k)),
            })
            .collect();
        parts.extend(
            g.extra
                .iter()
                .map(|(k, v)| format!("{}-{}", name_part(k), name_part(v))),
        );
        let mut base = format!("recommended.{}", parts.join("-"));
        base.truncate(MAX_NAME);
        let mut name = base.clone();
        let mut n = 2;
        while !taken.insert(name.clone()) {
            name = format!("{base}-{n}");
            n += 1;
        }
        out.insert((*g).clone(), name);
    }
    out
}

fn selectors(
    groups: &BTreeSet<&GroupKey>,
    group_by: &[String],
) -> BTreeMap<GroupKey, LabelSelector> {
    // Keys that set the partial groups apart: a partial group's selector says each one it
    // lacks is absent, so that no two groups' selectors overlap.
    let extra_keys: BTreeSet<&String> = groups
        .iter()
        .filter(|g| !g.complete())
        .flat_map(|g| g.extra.keys())
        .collect();
    groups
        .iter()
        .map(|g| {
            let mut sel = LabelSelector::default();
            let mut absent: BTreeSet<&String> = BTreeSet::new();
            for (k, v) in group_by.iter().zip(&g.values) {
                match v {
                    Some(v) => {
                        sel.match_labels.insert(k.clone(), v.clone());
                    }
                    None => {
                        absent.insert(k);
                    }
                }
            }
            if !g.complete() {
                sel.match_labels
                    .extend(g.extra.iter().map(|(k, v)| (k.clone(), v.clone())));
                absent.extend(extra_keys.iter().filter(|k| !g.extra.contains_key(**k)));
            }
            sel.match_expressions = absent
                .into_iter()
                .map(|k| Requirement {
                    key: k.clone(),
                    operator: Operator::DoesNotExist,
                    values: Vec::new(),
                })
                .collect();
            ((*g).clone(), sel)
        })
        .collect()
}

/// The display name of a group: `app=web`, or `app absent, role=batch`.
pub(crate) fn describe(g: &GroupKey, group_by: &[String]) -> String {
    let mut parts: Vec<String> = group_by
        .iter()
        .zip(&g.values)
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => format!("no {k}"),
        })
        .collect();
    parts.extend(g.extra.iter().map(|(k, v)| format!("{k}={v}")));
    parts.join(", ")
}
