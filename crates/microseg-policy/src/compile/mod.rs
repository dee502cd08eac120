//! The compiler: Workloads and Policies → the data plane's tables.
//!
//! A [`Compiler`] keeps its numbering (identities, rule ids, profiles) from one compile to
//! the next, and what each rule contributed to each profile, by peer. When the peer
//! identities stay the same (no CIDR and no workload address or label came or went), a
//! compile redoes only the policies that changed and the peers their rules name, and
//! reports the result as [`TableChanges`]: a one-rule edit next to 100,000 rules costs
//! microseconds, not a recompile. Otherwise it compiles everything again.
//!
//! A compile runs in phases, each in its own module: the incremental diff (`diff`), the
//! numbering of rules, policies and profiles (`numbering`), the selection of each local
//! endpoint's profile and the writing of the profiles' sections (`profiles`, which uses
//! `section` and `entries`), then the endpoints (`endpoints`).

mod diff;
mod endpoints;
mod entries;
mod identity;
mod numbering;
mod profiles;
mod section;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rustc_hash::FxHashMap;

use microseg_common::{tables::*, tier, verdict, RULE_DEFAULT_DENY};

pub use identity::{Identities, IdentityAllocator, Net, Signature};

use crate::model::{Action, Direction, ResourceSet, Workload};
use diff::{policies_by_name, workload_identities, Last};
use section::Sink;

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
        let now = policies_by_name(set);
        let workloads = workload_identities(set);
        let mut base = self.diff(set, &now, &workloads);
        let new_rule_ids = self.number(set, &base, &now);
        let selected = self.select(set, local);

        let mut tables = self.tables_to_write(&base);
        let mut changes = TableChanges::default();
        let mut problems = Vec::new();
        let profiles = {
            let mut sink = Sink {
                tables: Arc::make_mut(&mut tables),
                changes: base.incremental.then_some(&mut changes),
            };
            let profiles =
                self.write_profiles(&selected, &mut base, &now, &mut sink, &mut problems);
            self.write_endpoints(&selected, &base.ids, &profiles.flags, &mut sink);
            profiles
        };
        self.tables = tables;

        let endpoints = selected
            .iter()
            .map(|(ep, w, _)| (ep.ifindex, w.name.clone()))
            .collect();
        // Tags of policies that are gone (their contributions went with them).
        self.policy_tags
            .retain(|name, _| now.contains_key(name.as_str()));
        let incremental = base.incremental;
        let identities = base.ids.signatures.len();
        let profile_count = profiles.flags.len();
        // Problems leave some entries out; the next compile starts over to find them again.
        if problems.is_empty() {
            self.last = Some(base.into_last(&now, workloads, profiles.states));
        }
        Compiled {
            tables: self.tables.clone(),
            changes: incremental.then_some(changes),
            incremental,
            rules: self.rules.clone(),
            new_rule_ids,
            identities,
            endpoints,
            profiles: profile_count,
            problems,
        }
    }

    /// The tables this compile writes into: the last compile's when it builds on them,
    /// otherwise new ones holding only the identities.
    fn tables_to_write(&mut self, base: &diff::Base) -> Arc<Tables> {
        if base.incremental {
            std::mem::take(&mut self.tables)
        } else {
            // Started over: the previous tables go (and with them a copy of every entry).
            self.tables = Arc::default();
            Arc::new(Tables {
                identities: base.ids.prefixes.clone(),
                ..Default::default()
            })
        }
    }

    fn tag(&self, policy: &str) -> u32 {
        self.policy_tags[policy]
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
