//! The compiler: Workloads and Policies → the data plane's tables.
//!
//! A [`Compiler`] keeps its numbering (identities, rule ids, profiles) from one compile to
//! the next, and what each rule contributed to each profile, by peer. When the peer
//! identities stay the same (no CIDR and no workload address or label came or went), a
//! compile redoes only the policies that changed and the peers their rules name, and
//! reports the result as [`TableChanges`]: a one-rule edit next to 100,000 rules costs
//! microseconds, not a recompile. Otherwise it compiles everything again.

mod entries;
mod identity;
mod numbering;
mod section;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use microseg_common::{
    dir_flags, endpoint_flags, rank, tables::*, tier, verdict, EndpointInfo, IDENTITY_ANY,
    IDENTITY_WORLD, RULE_DEFAULT_DENY,
};

pub use identity::{Identities, IdentityAllocator, Net, Signature};

use crate::model::{Action, Direction, Mode, Peer, Policy, ResourceSet, Workload};
use entries::{rule_matches, Contribution, SectionId};
use section::{PolicyPart, Section, Sink};

/// What a rule id stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleInfo {
    /// Shared by the rules of one policy.
    pub policy: Arc<str>,
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
    /// The whole state. Shared with the compiler: drop it before the next compile, or
    /// that compile copies it.
    pub tables: Arc<Tables>,
    /// What changed since the compiler's previous output, when only that was compiled;
    /// None when the compile started over (apply `tables` whole, which compares).
    pub changes: Option<TableChanges>,
    /// Whether only what changed was compiled (the previous state was reused).
    pub incremental: bool,
    /// Rule id → rule, for every id in `tables` (shared like `tables`).
    pub rules: Arc<BTreeMap<u32, RuleInfo>>,
    /// Rule ids handed out in this compile that were free before (their counters restart).
    pub new_rule_ids: Vec<u32>,
    /// How many peer identities exist.
    pub identities: usize,
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
        let (workload, message) = (
            crate::escape_control(&self.workload),
            crate::escape_control(&self.message),
        );
        write!(f, "workload \"{workload}\": {message}")
    }
}

/// Compiles resource sets, keeping numbers stable across compiles.
#[derive(Clone, Default)]
pub struct Compiler {
    identities: IdentityAllocator,
    /// Policy name → rule ids by index, per direction.
    rule_ids: FxHashMap<String, numbering::RuleIds>,
    free_rule_ids: Vec<u32>,
    next_rule_id: u32,
    /// (enforce policies, audit policies) selecting an endpoint → profile id.
    profiles: FxHashMap<ProfileKey, u32>,
    /// Profile id → the workloads that had it in the last compile.
    profile_members: FxHashMap<u32, Vec<String>>,
    next_profile: u32,
    /// Policy name → the tag its contributions carry in sections.
    policy_tags: FxHashMap<String, u32>,
    next_tag: u32,
    tables: Arc<Tables>,
    rules: Arc<BTreeMap<u32, RuleInfo>>,
    /// What the last compile was built from; None: the next compile starts over.
    last: Option<Last>,
}

/// The names of the enforce and audit policies selecting an endpoint.
type ProfileKey = (Vec<String>, Vec<String>);

/// What peer identities are built from, per workload: name, labels, addresses.
type WorkloadIdentity = (String, BTreeMap<String, String>, Vec<IpAddr>);

#[derive(Clone)]
struct Last {
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
        now: &FxHashMap<&str, &Arc<Policy>>,
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

/// The policies of this compile and of the last, and which names differ between them.
struct Versions<'a> {
    changed: &'a FxHashSet<String>,
    old: &'a FxHashMap<String, Arc<Policy>>,
    now: &'a FxHashMap<&'a str, &'a Arc<Policy>>,
}

#[derive(Clone)]
struct ProfileState {
    key: ProfileKey,
    /// Indexed by `tier * 2 + direction`.
    sections: [Section; 4],
}

const TIERS: [u8; 2] = [tier::ENFORCE, tier::AUDIT];
const DIRECTIONS: [Direction; 2] = [Direction::Ingress, Direction::Egress];

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

fn tier_names(key: &ProfileKey, tier_code: u8) -> &[String] {
    if tier_code == tier::ENFORCE {
        &key.0
    } else {
        &key.1
    }
}

/// Every CIDR and `except` a policy names (with repeats).
fn policy_cidrs(p: &Policy) -> impl Iterator<Item = Net> + '_ {
    p.ingress
        .iter()
        .chain(p.egress.iter())
        .flatten()
        .flat_map(|r| r.peers.iter())
        .flat_map(|peer| match peer {
            Peer::Cidr { cidr, except } => std::iter::once(cidr)
                .chain(except.iter())
                .map(Net::from_ipnet)
                .collect::<Vec<_>>(),
            Peer::Selector(_) => Vec::new(),
        })
}

fn workload_identities(set: &ResourceSet) -> Vec<WorkloadIdentity> {
    set.workloads
        .iter()
        .map(|w| (w.name.clone(), w.labels.clone(), w.ips.clone()))
        .collect()
}

/// The identities one rule's peers match (IDENTITY_ANY for any peer).
fn rule_peers(peers: &[Peer], ids: &mut Identities) -> Vec<u32> {
    if peers.is_empty() {
        return vec![IDENTITY_ANY];
    }
    let mut v: Vec<u32> = peers.iter().flat_map(|pe| ids.matching(pe)).collect();
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
    let mut contributions = Vec::new();
    for (i, rule) in p.section(dir).unwrap_or(&[]).iter().enumerate() {
        let best = (rank(p.priority, action_verdict(rule.action)), rule_ids[i]);
        let ports: Vec<(u8, Option<(u16, u16)>)> = rule
            .ports
            .iter()
            .map(|pm| (pm.protocol, pm.ports.map(|r| (r.start, r.end))))
            .collect();
        let sports: Vec<(u16, u16)> = rule.source_ports.iter().map(|r| (r.start, r.end)).collect();
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
    pub fn new() -> Compiler {
        Compiler::default()
    }

    /// Rule id → rule, as of the last compile.
    pub fn rules(&self) -> &BTreeMap<u32, RuleInfo> {
        &self.rules
    }

    /// The last compile's tables.
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// Forgets what the last compile was built from (numbering stays): the next compile
    /// compiles everything.
    pub fn start_over(&mut self) {
        self.last = None;
    }

    pub fn compile(&mut self, set: &ResourceSet, local: &[LocalEndpoint]) -> Compiled {
        let mut now: FxHashMap<&str, &Arc<Policy>> = FxHashMap::default();
        for p in &set.policies {
            now.entry(p.name.as_str()).or_insert(p);
        }
        let workloads = workload_identities(set);
        let mut last = self.last.take();
        // Incremental when the identities stay: the last compile's state is built on.
        let (changed, incremental) = match last.as_mut() {
            Some(l) => l.changes_to(&now, &workloads),
            None => (FxHashSet::default(), false),
        };
        let (mut ids, cidrs, mut old_policies, mut old_profiles) = match last {
            Some(l) if incremental => (l.ids, l.cidrs, l.policies, l.profiles),
            _ => {
                let mut cidrs: FxHashMap<Net, u32> = FxHashMap::default();
                for p in now.values() {
                    for c in policy_cidrs(p) {
                        *cidrs.entry(c).or_insert(0) += 1;
                    }
                }
                let ids = Identities::build(set, &mut self.identities);
                (ids, cidrs, FxHashMap::default(), FxHashMap::default())
            }
        };
        let new_rule_ids = if incremental {
            self.renumber_rules(&changed, &old_policies, &now)
        } else {
            self.number_rules(set)
        };
        for name in now.keys() {
            if !self.policy_tags.contains_key(*name) {
                self.next_tag += 1;
                self.policy_tags.insert(name.to_string(), self.next_tag);
            }
        }

        // Which policies select each local workload: its profile's key.
        let by_name: FxHashMap<&str, &Workload> =
            set.workloads.iter().map(|w| (w.name.as_str(), w)).collect();
        let mut selected: Vec<(&LocalEndpoint, &Workload, ProfileKey)> = Vec::new();
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

        let mut changes = TableChanges::default();
        let mut tables = if incremental {
            std::mem::take(&mut self.tables)
        } else {
            // Started over: the previous tables go (and with them a copy of every entry).
            self.tables = Arc::default();
            Arc::new(Tables {
                identities: ids.prefixes.clone(),
                ..Default::default()
            })
        };
        let mut problems = Vec::new();
        let mut profile_flags: FxHashMap<u32, [u8; 4]> = FxHashMap::default();
        let mut profiles: FxHashMap<u32, ProfileState> = FxHashMap::default();
        {
            let mut sink = Sink {
                tables: Arc::make_mut(&mut tables),
                changes: incremental.then_some(&mut changes),
            };
            let mut by_profile: BTreeMap<u32, &ProfileKey> = BTreeMap::new();
            for (_, _, key) in &selected {
                by_profile.insert(self.profiles[key], key);
            }
            for (id, key) in by_profile {
                let mut ps = old_profiles.remove(&id).unwrap_or_else(|| ProfileState {
                    key: Default::default(),
                    sections: Default::default(),
                });
                let policies = Versions {
                    changed: &changed,
                    old: &old_policies,
                    now: &now,
                };
                self.update_profile(
                    id,
                    key,
                    &mut ps,
                    &policies,
                    &mut ids,
                    &mut sink,
                    &mut problems,
                );
                ps.key = key.clone();
                profile_flags.insert(id, self.flags_of(&ps, &now));
                profiles.insert(id, ps);
            }
            // Profiles no endpoint has any more.
            for (id, mut ps) in old_profiles.drain() {
                for (i, section) in ps.sections.iter_mut().enumerate() {
                    let sid = SectionId {
                        profile: id,
                        tier: i as u8 / 2,
                        direction: i as u8 % 2,
                    };
                    section.clear(sid, &mut sink);
                }
            }
            self.write_endpoints(&selected, &ids, &profile_flags, &mut sink);
        }
        self.tables = tables;
        let endpoints = selected
            .iter()
            .map(|(ep, w, _)| (ep.ifindex, w.name.clone()))
            .collect();
        // Tags of policies that are gone (their contributions went with them).
        self.policy_tags
            .retain(|name, _| now.contains_key(name.as_str()));
        for name in &changed {
            match now.get(name.as_str()) {
                Some(p) => old_policies.insert(name.clone(), (*p).clone()),
                None => old_policies.remove(name),
            };
        }
        if !incremental {
            old_policies = now
                .iter()
                .map(|(n, p)| (n.to_string(), (*p).clone()))
                .collect();
        }
        let identities = ids.signatures.len();
        // Problems leave some entries out; the next compile starts over to find them again.
        if problems.is_empty() {
            self.last = Some(Last {
                policies: old_policies,
                workloads,
                cidrs,
                ids,
                profiles,
            });
        }
        Compiled {
            tables: self.tables.clone(),
            changes: incremental.then_some(changes),
            incremental,
            rules: self.rules.clone(),
            new_rule_ids,
            identities,
            endpoints,
            profiles: profile_flags.len(),
            problems,
        }
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

    /// Endpoints and their addresses: few, so rewritten from scratch and compared.
    fn write_endpoints(
        &self,
        selected: &[(&LocalEndpoint, &Workload, ProfileKey)],
        ids: &Identities,
        profile_flags: &FxHashMap<u32, [u8; 4]>,
        sink: &mut Sink,
    ) {
        let mut endpoints = BTreeMap::new();
        let mut addrs = std::collections::BTreeSet::new();
        for (ep, w, key) in selected {
            let profile = self.profiles[key];
            // Both families always: a workload listing only IPv4 addresses must not be
            // able to send IPv6 from another workload's address either.
            let mut flags = endpoint_flags::VERIFY_SOURCE_V4 | endpoint_flags::VERIFY_SOURCE_V6;
            if w.mode == Mode::Audit {
                flags |= endpoint_flags::AUDIT_MODE;
            }
            for ip in &w.ips {
                addrs.insert((ep.ifindex, addr_words(*ip)));
            }
            let identity = w
                .ips
                .first()
                .map(|ip| ids.of(*ip))
                .unwrap_or(IDENTITY_WORLD);
            endpoints.insert(
                ep.ifindex,
                EndpointInfo {
                    profile,
                    identity,
                    flags,
                    dir_flags: profile_flags[&profile],
                },
            );
        }
        let t = &mut *sink.tables;
        if let Some(c) = sink.changes.as_deref_mut() {
            let old = Tables {
                endpoints: std::mem::take(&mut t.endpoints),
                endpoint_addrs: std::mem::take(&mut t.endpoint_addrs),
                ..Default::default()
            };
            let new = Tables {
                endpoints: endpoints.clone(),
                endpoint_addrs: addrs.clone(),
                ..Default::default()
            };
            c.then(&TableChanges::between(&old, &new));
        }
        t.endpoints = endpoints;
        t.endpoint_addrs = addrs;
    }

    fn tag(&self, policy: &str) -> u32 {
        self.policy_tags[policy]
    }

    /// A profile's `dir_flags`, indexed by `tier * 2 + direction`.
    fn flags_of(&self, ps: &ProfileState, now: &FxHashMap<&str, &Arc<Policy>>) -> [u8; 4] {
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

/// Policy name reported for the implicit default deny.
pub fn rule_policy_name(rules: &BTreeMap<u32, RuleInfo>, rule_id: u32) -> Option<String> {
    match rule_id {
        RULE_DEFAULT_DENY => Some(crate::DEFAULT_DENY.to_string()),
        id => rules.get(&id).map(|r| r.policy.to_string()),
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
