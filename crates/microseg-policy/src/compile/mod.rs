//! The compiler: Workloads and Policies → the data plane's tables.
//!
//! A [`Compiler`] keeps its numbering (identities, rule ids, profiles) from one compile to
//! the next, so a change to one policy or one workload's labels changes only the entries
//! it touches; the data plane then writes just that difference.

mod entries;
mod identity;

use std::collections::{BTreeMap, HashMap};

use rustc_hash::{FxHashMap, FxHashSet};

use microseg_common::{
    dir_flags, endpoint_flags, rank, tables::*, tier, verdict, EndpointInfo, IDENTITY_ANY,
    IDENTITY_WORLD, RULE_DEFAULT_DENY, RULE_FIRST,
};

pub use identity::{Identities, IdentityAllocator, Signature};

use crate::model::{Action, Direction, Mode, Policy, ResourceSet, Workload};
use entries::{Output, Section};

/// What a rule id stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleInfo {
    pub policy: String,
    pub direction: Direction,
    /// Index in the policy's `ingress` or `egress` list.
    pub index: u32,
    pub action: Action,
    pub audit: bool,
}

/// A workload enforced on this node: its name and the ifindex of its interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalEndpoint {
    pub workload: String,
    pub ifindex: u32,
}

/// One compile's output.
pub struct Compiled {
    pub tables: Tables,
    /// Rule id → rule, for every id in `tables`.
    pub rules: BTreeMap<u32, RuleInfo>,
    /// Rule ids handed out in this compile that were free before (their counters restart).
    pub new_rule_ids: Vec<u32>,
    pub identities: BTreeMap<u32, Signature>,
    /// ifindex → workload name.
    pub endpoints: BTreeMap<u32, String>,
    pub profiles: usize,
    /// What could not be compiled (e.g. too many `sourcePorts` rules for one peer); when
    /// not empty the tables are incomplete and must not be applied.
    pub problems: Vec<Problem>,
}

/// Something of one workload's policy the data plane cannot hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub workload: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "workload \"{}\": {}", self.workload, self.message)
    }
}

/// Compiles resource sets, keeping numbers stable across compiles.
#[derive(Default)]
pub struct Compiler {
    identities: IdentityAllocator,
    rule_ids: FxHashMap<(String, Direction, u32), u32>,
    free_rule_ids: Vec<u32>,
    next_rule_id: u32,
    /// (enforce policies, audit policies) selecting an endpoint → profile id.
    profiles: FxHashMap<ProfileKey, u32>,
    /// Profile id → the workloads that had it in the last compile.
    profile_members: FxHashMap<u32, Vec<String>>,
    next_profile: u32,
}

/// The names of the enforce and audit policies selecting an endpoint.
type ProfileKey = (Vec<String>, Vec<String>);

fn direction_code(d: Direction) -> u8 {
    match d {
        Direction::Ingress => microseg_common::direction::INGRESS,
        Direction::Egress => microseg_common::direction::EGRESS,
    }
}

fn action_verdict(a: Action) -> u8 {
    match a {
        Action::Allow => verdict::ALLOW,
        Action::Deny => verdict::DENY,
        Action::Log => verdict::LOG,
    }
}

impl Compiler {
    pub fn new() -> Compiler {
        Compiler::default()
    }

    pub fn compile(&mut self, set: &ResourceSet, local: &[LocalEndpoint]) -> Compiled {
        let mut ids = Identities::build(set, &mut self.identities);
        let (rules, new_rule_ids) = self.number_rules(set);
        let rule_id_of: FxHashMap<(&str, Direction, u32), u32> = rules
            .iter()
            .map(|(id, r)| ((r.policy.as_str(), r.direction, r.index), *id))
            .collect();

        let mut tables = Tables {
            identities: ids.prefixes.clone(),
            ..Default::default()
        };
        let mut endpoints = BTreeMap::new();
        let mut problems = Vec::new();
        let mut profile_flags: FxHashMap<u32, [u8; 4]> = FxHashMap::default();
        let mut used_profiles = FxHashSet::default();
        // Which policies select each local workload: its profile's key.
        let mut selected = Vec::new();
        for ep in local {
            let Some(w) = set.workloads.iter().find(|w| w.name == ep.workload) else {
                continue;
            };
            let selecting = |mode: Mode| -> Vec<&Policy> {
                set.policies
                    .iter()
                    .filter(|p| p.mode == mode && p.selector.matches(&w.labels))
                    .collect()
            };
            let (enforce, audit) = (selecting(Mode::Enforce), selecting(Mode::Audit));
            let names = |ps: &[&Policy]| ps.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
            let key = (names(&enforce), names(&audit));
            selected.push((ep, w, key, enforce, audit));
        }
        let keys: Vec<&ProfileKey> = selected.iter().map(|s| &s.2).collect();
        let members: Vec<&str> = selected.iter().map(|s| s.1.name.as_str()).collect();
        self.number_profiles(&keys, &members);
        for (ep, w, key, enforce, audit) in &selected {
            let (ep, w, enforce, audit) = (*ep, *w, enforce, audit);
            let profile = self.profiles[key];
            used_profiles.insert(profile);
            let flags = match profile_flags.get(&profile) {
                Some(f) => *f,
                None => {
                    let mut out = Output {
                        policy: &mut tables.policy,
                        port_ranges: &mut tables.port_ranges,
                        source_ports: &mut tables.source_ports,
                        problems: &mut problems,
                    };
                    let tiers = [(tier::ENFORCE, &enforce[..]), (tier::AUDIT, &audit[..])];
                    let f =
                        compile_profile(profile, &tiers, &rule_id_of, &mut ids, &w.name, &mut out);
                    profile_flags.insert(profile, f);
                    f
                }
            };
            // Both families always: a workload listing only IPv4 addresses must not be
            // able to send IPv6 from another workload's address either.
            let mut ep_flags = endpoint_flags::VERIFY_SOURCE_V4 | endpoint_flags::VERIFY_SOURCE_V6;
            if w.mode == Mode::Audit {
                ep_flags |= endpoint_flags::AUDIT_MODE;
            }
            for ip in &w.ips {
                tables.endpoint_addrs.insert((ep.ifindex, addr_words(*ip)));
            }
            let identity = w
                .ips
                .first()
                .map(|ip| ids.of(*ip))
                .unwrap_or(IDENTITY_WORLD);
            tables.endpoints.insert(
                ep.ifindex,
                EndpointInfo {
                    profile,
                    identity,
                    flags: ep_flags,
                    dir_flags: flags,
                },
            );
            endpoints.insert(ep.ifindex, w.name.clone());
        }
        Compiled {
            tables,
            rules,
            new_rule_ids,
            identities: ids.signatures.clone(),
            endpoints,
            profiles: used_profiles.len(),
            problems,
        }
    }

    /// Profile ids for this compile's keys. A key seen before keeps its id. A new key whose
    /// workloads are exactly those of a profile whose key went away takes over that id:
    /// adding or removing a policy that selects the same workloads then rewrites only the
    /// entries its rules touch, not every entry of the profile.
    fn number_profiles(&mut self, keys: &[&ProfileKey], members: &[&str]) {
        let mut groups: BTreeMap<&ProfileKey, Vec<String>> = BTreeMap::new();
        for (k, m) in keys.iter().zip(members) {
            groups.entry(*k).or_default().push(m.to_string());
        }
        for g in groups.values_mut() {
            g.sort();
        }
        let gone: FxHashMap<&Vec<String>, u32> = self
            .profiles
            .iter()
            .filter(|(k, _)| !groups.contains_key(k))
            .filter_map(|(_, id)| self.profile_members.get(id).map(|m| (m, *id)))
            .collect();
        let mut next: FxHashMap<ProfileKey, u32> = FxHashMap::default();
        let mut members_of = FxHashMap::default();
        for (key, group) in &groups {
            let id = match self.profiles.get(*key) {
                Some(id) => *id,
                None => match gone.get(group) {
                    Some(id) => *id,
                    None => {
                        self.next_profile += 1;
                        self.next_profile
                    }
                },
            };
            next.insert((*key).clone(), id);
            members_of.insert(id, group.clone());
        }
        self.profiles = next;
        self.profile_members = members_of;
    }

    /// Stable rule ids for every rule of every policy; returns them and the ids new to use.
    fn number_rules(&mut self, set: &ResourceSet) -> (BTreeMap<u32, RuleInfo>, Vec<u32>) {
        let mut rules = BTreeMap::new();
        let mut live = FxHashSet::default();
        for p in &set.policies {
            for dir in [Direction::Ingress, Direction::Egress] {
                for (i, r) in p.section(dir).unwrap_or(&[]).iter().enumerate() {
                    let key = (p.name.clone(), dir, i as u32);
                    live.insert(key.clone());
                    let info = RuleInfo {
                        policy: p.name.clone(),
                        direction: dir,
                        index: i as u32,
                        action: r.action,
                        audit: p.mode == Mode::Audit,
                    };
                    rules.insert(key, info);
                }
            }
        }
        let mut freed = Vec::new();
        self.rule_ids.retain(|k, id| {
            let keep = live.contains(k);
            if !keep {
                freed.push(*id);
            }
            keep
        });
        self.free_rule_ids.extend(freed);
        let mut new_ids = Vec::new();
        let mut out = BTreeMap::new();
        for (key, info) in rules {
            let id = match self.rule_ids.get(&key) {
                Some(id) => *id,
                None => {
                    let id = self.free_rule_ids.pop().unwrap_or_else(|| {
                        self.next_rule_id = self.next_rule_id.max(RULE_FIRST);
                        self.next_rule_id += 1;
                        self.next_rule_id - 1
                    });
                    self.rule_ids.insert(key, id);
                    new_ids.push(id);
                    id
                }
            };
            out.insert(id, info);
        }
        (out, new_ids)
    }
}

/// Policy name reported for the implicit default deny.
pub fn rule_policy_name(rules: &BTreeMap<u32, RuleInfo>, rule_id: u32) -> Option<String> {
    match rule_id {
        RULE_DEFAULT_DENY => Some(crate::DEFAULT_DENY.to_string()),
        id => rules.get(&id).map(|r| r.policy.clone()),
    }
}

/// Workloads of `set` whose interface is in `interfaces` (name → ifindex).
pub fn local_endpoints(set: &ResourceSet, interfaces: &HashMap<String, u32>) -> Vec<LocalEndpoint> {
    set.workloads
        .iter()
        .filter_map(|w: &Workload| {
            let ifindex = interfaces.get(w.interface.as_deref()?)?;
            Some(LocalEndpoint {
                workload: w.name.clone(),
                ifindex: *ifindex,
            })
        })
        .collect()
}

/// Compiles `set` as if every workload with an interface were local (interfaces numbered
/// from 1), and reports what the data plane could not hold (see [`Compiled::problems`]) at
/// the workload concerned: what `microseg policy check` and the controller run before
/// accepting a policy.
pub fn compile_everywhere(set: &ResourceSet) -> (Compiled, Vec<crate::Diagnostic>) {
    let local: Vec<LocalEndpoint> = set
        .workloads
        .iter()
        .filter(|w| w.interface.is_some())
        .enumerate()
        .map(|(i, w)| LocalEndpoint {
            workload: w.name.clone(),
            ifindex: i as u32 + 1,
        })
        .collect();
    let compiled = Compiler::new().compile(set, &local);
    let diags = compiled
        .problems
        .iter()
        .map(|p| {
            let o = set
                .workloads
                .iter()
                .find(|w| w.name == p.workload)
                .map(|w| w.origin.clone())
                .unwrap_or_default();
            crate::Diagnostic::new(&o.file, o.line, o.col, p.to_string())
        })
        .collect();
    (compiled, diags)
}

/// Only the problems of [`compile_everywhere`].
pub fn check(set: &ResourceSet) -> Vec<crate::Diagnostic> {
    compile_everywhere(set).1
}

/// The entries of one endpoint profile (the policies selecting it, by tier); returns its
/// `dir_flags`, indexed by `tier * 2 + direction`.
fn compile_profile(
    profile: u32,
    tiers: &[(u8, &[&Policy]); 2],
    rule_id_of: &FxHashMap<(&str, Direction, u32), u32>,
    ids: &mut Identities,
    workload: &str,
    out: &mut Output,
) -> [u8; 4] {
    let mut f = [0u8; 4];
    for (tier_code, policies) in tiers {
        for dir in [Direction::Ingress, Direction::Egress] {
            let d = direction_code(dir);
            let mut section = Section::default();
            let mut flags = 0;
            for p in policies.iter() {
                flags |= dir_flags::SELECTED;
                let Some(rules) = p.section(dir) else {
                    continue;
                };
                flags |= dir_flags::HAS_SECTION;
                for (i, rule) in rules.iter().enumerate() {
                    let id = rule_id_of[&(p.name.as_str(), dir, i as u32)];
                    let best = (rank(p.priority, action_verdict(rule.action)), id);
                    let peers: Vec<u32> = if rule.peers.is_empty() {
                        vec![IDENTITY_ANY]
                    } else {
                        let mut v: Vec<u32> =
                            rule.peers.iter().flat_map(|pe| ids.matching(pe)).collect();
                        v.sort_unstable();
                        v.dedup();
                        v
                    };
                    let ports: Vec<(u8, Option<(u16, u16)>)> = rule
                        .ports
                        .iter()
                        .map(|pm| (pm.protocol, pm.ports.map(|r| (r.start, r.end))))
                        .collect();
                    if rule.source_ports.is_empty() {
                        section.add(best, &peers, &ports);
                    } else {
                        let sports: Vec<(u16, u16)> =
                            rule.source_ports.iter().map(|r| (r.start, r.end)).collect();
                        section.add_source_ports(best, &peers, &ports, &sports);
                    }
                }
            }
            flags |= section.emit(profile, *tier_code, d, workload, dir, out);
            f[(*tier_code * 2 + d) as usize] = flags;
        }
    }
    f
}
