//! The sections phase: which policies select each local endpoint (its profile), and each
//! profile's sections brought from the policies it had to those it has now.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use microseg_common::{dir_flags, rank, tier, IDENTITY_ANY};

use super::diff::{Base, PoliciesByName};
use super::entries::{rule_matches, Contribution, SectionId};
use super::identity::Identities;
use super::section::{PolicyPart, Section, Sink};
use super::{
    action_verdict, direction_code, Compiler, LocalEndpoint, Problem, ProfileKey, DIRECTIONS, TIERS,
};
use crate::model::{Direction, Mode, Peer, Policy, ResourceSet, Workload};

/// A local endpoint, its workload, and the key of the profile it gets.
pub(super) type Selected<'a> = (&'a LocalEndpoint, &'a Workload, ProfileKey);

#[derive(Clone)]
pub(super) struct ProfileState {
    key: ProfileKey,
    /// Indexed by `tier * 2 + direction`.
    sections: [Section; 4],
}

/// The profiles of this compile: their state, and their `dir_flags` (indexed by
/// `tier * 2 + direction`).
pub(super) struct Profiles {
    pub states: FxHashMap<u32, ProfileState>,
    pub flags: FxHashMap<u32, [u8; 4]>,
}

/// The policies of this compile and of the last, and which names differ between them.
struct Versions<'a> {
    changed: &'a FxHashSet<String>,
    old: &'a FxHashMap<String, Arc<Policy>>,
    now: &'a PoliciesByName<'a>,
}

fn tier_names(key: &ProfileKey, tier_code: u8) -> &[String] {
    if tier_code == tier::ENFORCE {
        &key.0
    } else {
        &key.1
    }
}

/// The identities one rule's peers match (IDENTITY_ANY for any peer).
fn rule_peers(peers: &[Peer], ids: &mut Identities) -> Vec<u32> {
    if peers.is_empty() {
        return vec![IDENTITY_ANY];
    }
    let mut v: Vec<u32> = match peers {
        // One peer (the usual rule): its own vector, no second one.
        [one] => ids.matching(one),
        _ => peers.iter().flat_map(|pe| ids.matching(pe)).collect(),
    };
    v.sort_unstable();
    v.dedup();
    v
}

/// The peers one direction of a policy names.
fn policy_peers(p: &Policy, dir: Direction, ids: &mut Identities) -> Vec<u32> {
    let mut v: Vec<u32> = p
        .section(dir)
        .unwrap_or(&[])
        .iter()
        .flat_map(|r| rule_peers(&r.peers, ids))
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// What one direction of a policy contributes, by peer.
fn policy_part(
    p: &Policy,
    tag: u32,
    dir: Direction,
    rule_ids: &[u32],
    ids: &mut Identities,
) -> PolicyPart {
    let rules = p.section(dir).unwrap_or(&[]);
    let mut contributions = Vec::with_capacity(rules.len());
    // Reused for every rule: two allocations less per rule.
    let (mut ports, mut sports) = (Vec::new(), Vec::new());
    for (i, rule) in rules.iter().enumerate() {
        let best = (rank(p.priority, action_verdict(rule.action)), rule_ids[i]);
        ports.clear();
        ports.extend(
            rule.ports
                .iter()
                .map(|pm| (pm.protocol, pm.ports.map(|r| (r.start, r.end)))),
        );
        sports.clear();
        sports.extend(rule.source_ports.iter().map(|r| (r.start, r.end)));
        let matches = rule_matches(best, &ports, &sports);
        for peer in rule_peers(&rule.peers, ids) {
            for m in &matches {
                contributions.push((
                    peer,
                    Contribution {
                        policy: tag,
                        best,
                        what: *m,
                    },
                ));
            }
        }
    }
    contributions
}

impl Compiler {
    /// Which policies select each local workload (its profile's key), and the profiles
    /// numbered. Endpoints whose workload is not in `set` are left out.
    pub(super) fn select<'a>(
        &mut self,
        set: &'a ResourceSet,
        local: &'a [LocalEndpoint],
    ) -> Vec<Selected<'a>> {
        let by_name: FxHashMap<&str, &Workload> =
            set.workloads.iter().map(|w| (w.name.as_str(), w)).collect();
        let mut selected: Vec<Selected> = Vec::new();
        for ep in local {
            let Some(w) = by_name.get(ep.workload.as_str()) else {
                continue;
            };
            let names = |mode: Mode| -> Vec<String> {
                set.policies
                    .iter()
                    .filter(|p| p.mode == mode && p.selector.matches(&w.labels))
                    .map(|p| p.name.clone())
                    .collect()
            };
            selected.push((ep, w, (names(Mode::Enforce), names(Mode::Audit))));
        }
        let keys: Vec<&ProfileKey> = selected.iter().map(|s| &s.2).collect();
        let members: Vec<&str> = selected.iter().map(|s| s.1.name.as_str()).collect();
        self.number_profiles(&keys, &members);
        selected
    }

    /// Brings every selected profile's sections up to date (taking its last state out
    /// of `base.profiles`), and clears those of profiles no endpoint has any more.
    pub(super) fn write_profiles(
        &self,
        selected: &[Selected],
        base: &mut Base,
        now: &PoliciesByName,
        sink: &mut Sink,
        problems: &mut Vec<Problem>,
    ) -> Profiles {
        let mut profiles = Profiles {
            states: FxHashMap::default(),
            flags: FxHashMap::default(),
        };
        let mut by_profile: BTreeMap<u32, &ProfileKey> = BTreeMap::new();
        for (_, _, key) in selected {
            by_profile.insert(self.profiles[key], key);
        }
        for (id, key) in by_profile {
            let mut ps = base.profiles.remove(&id).unwrap_or_else(|| ProfileState {
                key: Default::default(),
                sections: Default::default(),
            });
            let policies = Versions {
                changed: &base.changed,
                old: &base.policies,
                now,
            };
            self.update_profile(id, key, &mut ps, &policies, &mut base.ids, sink, problems);
            ps.key = key.clone();
            profiles.flags.insert(id, self.flags_of(&ps, now));
            profiles.states.insert(id, ps);
        }
        // Profiles no endpoint has any more.
        for (id, mut ps) in base.profiles.drain() {
            for (i, section) in ps.sections.iter_mut().enumerate() {
                let sid = SectionId {
                    profile: id,
                    tier: i as u8 / 2,
                    direction: i as u8 % 2,
                };
                section.clear(sid, sink);
            }
        }
        profiles
    }

    /// Brings one profile from the policies it had (`ps.key`) to those of `key`: the ones
    /// that left or changed take their contributions back, the ones that came or changed
    /// add theirs. What the data plane cannot hold is pushed to `problems`.
    #[allow(clippy::too_many_arguments)]
    fn update_profile(
        &self,
        id: u32,
        key: &ProfileKey,
        ps: &mut ProfileState,
        policies: &Versions,
        ids: &mut Identities,
        sink: &mut Sink,
        problems: &mut Vec<Problem>,
    ) {
        let workload = &self.profile_members[&id][0];
        for tier_code in TIERS {
            let (old_names, new_names) =
                (tier_names(&ps.key, tier_code), tier_names(key, tier_code));
            let old_set: FxHashSet<&str> = old_names.iter().map(|s| s.as_str()).collect();
            let new_set: FxHashSet<&str> = new_names.iter().map(|s| s.as_str()).collect();
            let removed: Vec<&Arc<Policy>> = old_names
                .iter()
                .filter(|n| !new_set.contains(n.as_str()) || policies.changed.contains(*n))
                .map(|n| &policies.old[n])
                .collect();
            let added: Vec<&Arc<Policy>> = new_names
                .iter()
                .filter(|n| !old_set.contains(n.as_str()) || policies.changed.contains(*n))
                .map(|n| policies.now[n.as_str()])
                .collect();
            if removed.is_empty() && added.is_empty() {
                continue;
            }
            for dir in DIRECTIONS {
                let d = direction_code(dir);
                let sid = SectionId {
                    profile: id,
                    tier: tier_code,
                    direction: d,
                };
                let gone: Vec<(u32, Vec<u32>)> = removed
                    .iter()
                    .map(|p| (self.tag(&p.name), policy_peers(p, dir, ids)))
                    .collect();
                let parts: Vec<PolicyPart> = added
                    .iter()
                    .map(|p| {
                        let rule_ids = self.rule_ids[&p.name].get(dir);
                        policy_part(p, self.tag(&p.name), dir, rule_ids, ids)
                    })
                    .collect();
                let section = &mut ps.sections[(tier_code * 2 + d) as usize];
                for message in section.update(sid, &gone, parts, sink) {
                    problems.push(Problem {
                        workload: workload.clone(),
                        message: format!("{dir}: {message}"),
                    });
                }
            }
        }
    }

    /// A profile's `dir_flags`, indexed by `tier * 2 + direction`.
    fn flags_of(&self, ps: &ProfileState, now: &PoliciesByName) -> [u8; 4] {
        let mut f = [0u8; 4];
        for tier_code in TIERS {
            let names = tier_names(&ps.key, tier_code);
            for dir in DIRECTIONS {
                let i = (tier_code * 2 + direction_code(dir)) as usize;
                let mut flags = ps.sections[i].flags();
                if !names.is_empty() {
                    flags |= dir_flags::SELECTED;
                }
                if names.iter().any(|n| now[n.as_str()].section(dir).is_some()) {
                    flags |= dir_flags::HAS_SECTION;
                }
                f[i] = flags;
            }
        }
        f
    }
}
