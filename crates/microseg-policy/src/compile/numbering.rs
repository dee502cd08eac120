//! Numbers that stay the same from one compile to the next: rule ids (per policy and
//! index), policy tags and profile ids (per set of selecting policies).

use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use microseg_common::RULE_FIRST;

use super::diff::{Base, PoliciesByName};
use super::{Compiler, ProfileKey, RuleInfo, DIRECTIONS};
use crate::model::{Direction, Mode, Policy, ResourceSet};

#[derive(Clone, Debug, Default)]
pub(super) struct RuleIds {
    ingress: Vec<u32>,
    egress: Vec<u32>,
}

impl RuleIds {
    /// The rule ids of one direction, by index.
    pub(super) fn get(&self, d: Direction) -> &[u32] {
        match d {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    pub(super) fn of(&mut self, d: Direction) -> &mut Vec<u32> {
        match d {
            Direction::Ingress => &mut self.ingress,
            Direction::Egress => &mut self.egress,
        }
    }
}

impl Compiler {
    /// The numbering phase: rule ids for the policies that changed (all of them when
    /// starting over), and a tag for each policy new to the compiler. Returns the rule ids
    /// handed out in this compile that were free before.
    pub(super) fn number(
        &mut self,
        set: &ResourceSet,
        base: &Base,
        now: &PoliciesByName,
    ) -> Vec<u32> {
        let fresh = if base.incremental {
            self.renumber_rules(&base.changed, &base.policies, now)
        } else {
            self.number_rules(set)
        };
        for name in now.keys() {
            if !self.policy_tags.contains_key(*name) {
                self.next_tag += 1;
                self.policy_tags.insert(name.to_string(), self.next_tag);
            }
        }
        fresh
    }

    /// Profile ids for this compile's keys. A key seen before keeps its id. A new key whose
    /// workloads are exactly those of a profile whose key went away takes over that id:
    /// adding or removing a policy that selects the same workloads then rewrites only the
    /// entries its rules touch, not every entry of the profile.
    pub(super) fn number_profiles(&mut self, keys: &[&ProfileKey], members: &[&str]) {
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

    /// Gives `p`'s rules their ids: an index that existed keeps its id, the rest get free
    /// ones; records each rule in `self.rules`. Returns the ids handed out.
    fn number_policy(&mut self, p: &Policy) -> Vec<u32> {
        let mut ids = self.rule_ids.remove(&p.name).unwrap_or_default();
        let mut fresh = Vec::new();
        let rules = Arc::make_mut(&mut self.rules);
        let name: Arc<str> = Arc::from(p.name.as_str());
        for dir in DIRECTIONS {
            let n = p.section(dir).map_or(0, |s| s.len());
            let v = ids.of(dir);
            for id in v.drain(n.min(v.len())..) {
                rules.remove(&id);
                self.free_rule_ids.push(id);
            }
            while v.len() < n {
                let id = self.free_rule_ids.pop().unwrap_or_else(|| {
                    self.next_rule_id = self.next_rule_id.max(RULE_FIRST);
                    self.next_rule_id += 1;
                    self.next_rule_id - 1
                });
                v.push(id);
                fresh.push(id);
            }
            for (i, (rule, id)) in p
                .section(dir)
                .unwrap_or(&[])
                .iter()
                .zip(v.iter())
                .enumerate()
            {
                rules.insert(
                    *id,
                    RuleInfo {
                        policy: name.clone(),
                        direction: dir,
                        index: i as u32,
                        action: rule.action,
                        audit: p.mode == Mode::Audit,
                    },
                );
            }
        }
        self.rule_ids.insert(p.name.clone(), ids);
        fresh
    }

    /// Frees the rule ids of a policy that is gone.
    fn forget_policy(&mut self, name: &str) {
        if let Some(ids) = self.rule_ids.remove(name) {
            let rules = Arc::make_mut(&mut self.rules);
            for id in ids.ingress.into_iter().chain(ids.egress) {
                rules.remove(&id);
                self.free_rule_ids.push(id);
            }
        }
    }

    /// Rule ids after `changed` policies changed; returns the ids new to use.
    fn renumber_rules(
        &mut self,
        changed: &FxHashSet<String>,
        old: &FxHashMap<String, Arc<Policy>>,
        now: &PoliciesByName,
    ) -> Vec<u32> {
        let mut names: Vec<&String> = changed.iter().collect();
        names.sort();
        // Frees first, so that a rule moving between policies can keep a low id.
        for name in &names {
            if old.contains_key(*name) && !now.contains_key(name.as_str()) {
                self.forget_policy(name);
            }
        }
        let mut fresh = Vec::new();
        for name in names {
            if let Some(p) = now.get(name.as_str()) {
                fresh.extend(self.number_policy(p));
            }
        }
        fresh
    }

    /// Rule ids for every rule of every policy, from scratch (ids of rules that exist
    /// stay); returns the ids new to use.
    fn number_rules(&mut self, set: &ResourceSet) -> Vec<u32> {
        let live: FxHashSet<&str> = set.policies.iter().map(|p| p.name.as_str()).collect();
        let gone: Vec<String> = self
            .rule_ids
            .keys()
            .filter(|n| !live.contains(n.as_str()))
            .cloned()
            .collect();
        for name in gone {
            self.forget_policy(&name);
        }
        let mut seen = FxHashSet::default();
        let mut fresh = Vec::new();
        let mut policies: Vec<&Arc<Policy>> = set.policies.iter().collect();
        policies.sort_by(|a, b| a.name.cmp(&b.name));
        for p in policies {
            if seen.insert(p.name.as_str()) {
                fresh.extend(self.number_policy(p));
            }
        }
        fresh
    }
}
