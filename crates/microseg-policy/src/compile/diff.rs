//! The incremental diff: what changed since the last compile, and whether the peer
//! identities stay, which decides if this compile builds on the last one's state.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use super::identity::{Identities, Net};
use super::profiles::ProfileState;
use super::Compiler;
use crate::model::{Peer, Policy, ResourceSet};

/// The policies of a compile, by name (the first of a repeated name).
pub(super) type PoliciesByName<'a> = FxHashMap<&'a str, &'a Arc<Policy>>;

/// What peer identities are built from, per workload: name, labels, addresses.
pub(super) type WorkloadIdentity = (String, BTreeMap<String, String>, Vec<IpAddr>);

pub(super) fn policies_by_name(set: &ResourceSet) -> PoliciesByName<'_> {
    let mut now: PoliciesByName = FxHashMap::default();
    for p in &set.policies {
        now.entry(p.name.as_str()).or_insert(p);
    }
    now
}

pub(super) fn workload_identities(set: &ResourceSet) -> Vec<WorkloadIdentity> {
    set.workloads
        .iter()
        .map(|w| (w.name.clone(), w.labels.clone(), w.ips.clone()))
        .collect()
}

/// Every CIDR and `except` a policy names (with repeats).
fn policy_cidrs(p: &Policy) -> impl Iterator<Item = Net> + '_ {
    p.ingress
        .iter()
        .chain(p.egress.iter())
        .flatten()
        .flat_map(|r| r.peers.iter())
        .flat_map(|peer| {
            // No vector per peer: 100,000 CIDR peers are read twice per compile.
            let (cidr, except) = match peer {
                Peer::Cidr { cidr, except } => (Some(cidr), except.as_slice()),
                Peer::Selector(_) => (None, &[][..]),
            };
            cidr.into_iter().chain(except).map(Net::from_ipnet)
        })
}

/// How many times the policies of `now` name each CIDR.
fn count_cidrs(now: &PoliciesByName) -> FxHashMap<Net, u32> {
    let mut cidrs: FxHashMap<Net, u32> = FxHashMap::default();
    for p in now.values() {
        for c in policy_cidrs(p) {
            *cidrs.entry(c).or_insert(0) += 1;
        }
    }
    cidrs
}

/// What the last compile was built from.
#[derive(Clone)]
pub(super) struct Last {
    policies: FxHashMap<String, Arc<Policy>>,
    workloads: Vec<WorkloadIdentity>,
    /// Every CIDR (and `except`) the policies name, with how many times.
    cidrs: FxHashMap<Net, u32>,
    ids: Identities,
    profiles: FxHashMap<u32, ProfileState>,
}

impl Last {
    /// The policies added, removed or different in `now`, and whether the identities stay
    /// (no CIDR came or went and the workloads are the same). Counts `now`'s CIDRs.
    fn changes_to(
        &mut self,
        now: &PoliciesByName,
        workloads: &[WorkloadIdentity],
    ) -> (FxHashSet<String>, bool) {
        let mut changed: FxHashSet<String> = FxHashSet::default();
        for (name, p) in now {
            match self.policies.get(*name) {
                Some(q) if Arc::ptr_eq(p, q) || p == &q => {}
                _ => {
                    changed.insert(name.to_string());
                }
            }
        }
        for name in self.policies.keys() {
            if !now.contains_key(name.as_str()) {
                changed.insert(name.clone());
            }
        }
        let mut same_identities = self.workloads == workloads;
        // CIDR → whether it was named before this compile.
        let mut touched: FxHashMap<Net, bool> = FxHashMap::default();
        for name in &changed {
            if let Some(old) = self.policies.get(name) {
                for c in policy_cidrs(old) {
                    touched.entry(c).or_insert(true);
                    *self.cidrs.get_mut(&c).expect("counted") -= 1;
                }
            }
            if let Some(new) = now.get(name.as_str()) {
                for c in policy_cidrs(new) {
                    let n = self.cidrs.entry(c).or_insert(0);
                    touched.entry(c).or_insert(*n > 0);
                    *n += 1;
                }
            }
        }
        for (c, before) in touched {
            let named = self.cidrs[&c] > 0;
            if !named {
                self.cidrs.remove(&c);
            }
            if named != before {
                same_identities = false;
            }
        }
        (changed, same_identities)
    }
}

/// What a compile starts from: the last compile's state when it is incremental, or a
/// fresh one.
pub(super) struct Base {
    /// Names of the policies added, removed or different since the last compile.
    pub changed: FxHashSet<String>,
    /// Whether this compile builds on the last one's state.
    pub incremental: bool,
    pub ids: Identities,
    pub cidrs: FxHashMap<Net, u32>,
    /// The last compile's policies (empty when starting over).
    pub policies: FxHashMap<String, Arc<Policy>>,
    /// The last compile's profiles (empty when starting over); the sections phase takes
    /// out those it keeps.
    pub profiles: FxHashMap<u32, ProfileState>,
}

impl Base {
    /// What the next compile builds on.
    pub fn into_last(
        self,
        now: &PoliciesByName,
        workloads: Vec<WorkloadIdentity>,
        profiles: FxHashMap<u32, ProfileState>,
    ) -> Last {
        let policies = if self.incremental {
            let mut policies = self.policies;
            for name in &self.changed {
                match now.get(name.as_str()) {
                    Some(p) => policies.insert(name.clone(), (*p).clone()),
                    None => policies.remove(name),
                };
            }
            policies
        } else {
            now.iter()
                .map(|(n, p)| (n.to_string(), (*p).clone()))
                .collect()
        };
        Last {
            policies,
            workloads,
            cidrs: self.cidrs,
            ids: self.ids,
            profiles,
        }
    }
}

impl Compiler {
    /// Compares `now` with the last compile: incremental when the identities stay, and
    /// then the last compile's state is built on; otherwise the identities are built anew.
    pub(super) fn diff(
        &mut self,
        set: &ResourceSet,
        now: &PoliciesByName,
        workloads: &[WorkloadIdentity],
    ) -> Base {
        let mut last = self.last.take();
        let (changed, incremental) = match last.as_mut() {
            Some(l) => l.changes_to(now, workloads),
            None => (FxHashSet::default(), false),
        };
        match last {
            Some(l) if incremental => Base {
                changed,
                incremental,
                ids: l.ids,
                cidrs: l.cidrs,
                policies: l.policies,
                profiles: l.profiles,
            },
            _ => {
                // `changes_to` has already brought the last compile's counts to `now`'s.
                let cidrs = match last {
                    Some(l) => {
                        debug_assert!(l.cidrs == count_cidrs(now), "CIDR counts drifted");
                        l.cidrs
                    }
                    None => count_cidrs(now),
                };
                Base {
                    changed,
                    incremental,
                    ids: Identities::build(set, &mut self.identities),
                    cidrs,
                    policies: FxHashMap::default(),
                    profiles: FxHashMap::default(),
                }
            }
        }
    }
}
