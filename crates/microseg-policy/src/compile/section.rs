//! One (profile, tier, direction) kept between compiles: every rule's contribution, by
//! peer, so that a change to one policy recomputes only the peers its rules name.

use std::collections::HashMap;
use std::hash::Hash;

use rustc_hash::{FxHashMap, FxHashSet};

use microseg_common::{
    dir_flags,
    tables::{TableChanges, Tables},
    IDENTITY_ANY,
};

use super::entries::{emit_peer, Contribution, PeerEntries, SectionId};

#[derive(Clone, Debug, Default)]
pub struct Section {
    peers: FxHashMap<u32, Vec<Contribution>>,
    // How many peers hold each kind of entry: the section's dir_flags.
    specific: u32,
    any: bool,
    with_ranges: u32,
    with_source_ports: u32,
}

/// Where entries go: the tables, and (when updating) the record of what changed.
pub struct Sink<'a> {
    pub tables: &'a mut Tables,
    pub changes: Option<&'a mut TableChanges>,
}

impl Sink<'_> {
    /// Room for `n` more policy entries in the tables and the changes.
    fn reserve(&mut self, n: usize) {
        self.tables.policy.reserve(n);
        if let Some(c) = self.changes.as_deref_mut() {
            c.policy.reserve(n);
        }
    }

    /// Replaces one peer's `old` entries by its `new` ones.
    fn replace(&mut self, old: &PeerEntries, new: &PeerEntries) {
        let t = &mut *self.tables;
        let mut c = self.changes.as_deref_mut();
        if !old.policy.is_empty() {
            let keep: FxHashSet<_> = new.policy.iter().map(|(k, _)| *k).collect();
            for (k, _) in old.policy.iter().filter(|(k, _)| !keep.contains(k)) {
                set(&mut t.policy, c.as_mut().map(|c| &mut c.policy), *k, None);
            }
        }
        for (k, v) in &new.policy {
            set(
                &mut t.policy,
                c.as_mut().map(|c| &mut c.policy),
                *k,
                Some(*v),
            );
        }
        for (k, _) in &old.port_ranges {
            if !new.port_ranges.iter().any(|(n, _)| n == k) {
                set(
                    &mut t.port_ranges,
                    c.as_mut().map(|c| &mut c.port_ranges),
                    *k,
                    None,
                );
            }
        }
        for (k, v) in &new.port_ranges {
            set(
                &mut t.port_ranges,
                c.as_mut().map(|c| &mut c.port_ranges),
                *k,
                Some(*v),
            );
        }
        let new_sports = new.source_ports.as_deref();
        if let Some((k, _)) = old.source_ports.as_deref() {
            if new_sports.map(|(n, _)| n) != Some(k) {
                set(
                    &mut t.source_ports,
                    c.as_mut().map(|c| &mut c.source_ports),
                    *k,
                    None,
                );
            }
        }
        if let Some((k, v)) = new_sports {
            set(
                &mut t.source_ports,
                c.as_mut().map(|c| &mut c.source_ports),
                *k,
                Some(*v),
            );
        }
    }
}

/// Sets (or with None removes) one key, and records it in `log` if that changed anything.
fn set<K: Copy + Eq + Hash, V: Copy + PartialEq>(
    map: &mut HashMap<K, V>,
    log: Option<&mut HashMap<K, Option<V>>>,
    key: K,
    value: Option<V>,
) {
    let changed = match value {
        Some(v) => map.insert(key, v) != Some(v),
        None => map.remove(&key).is_some(),
    };
    if let (true, Some(log)) = (changed, log) {
        log.insert(key, value);
    }
}

/// A policy's part in one section: per peer, what its rules contribute.
pub type PolicyPart = Vec<(u32, Contribution)>;

impl Section {
    /// Takes back the contributions of the `removed` policies (tag and the peers they
    /// named) and adds those of `added`; writes the entries of every peer touched and
    /// returns the problems found there.
    pub fn update(
        &mut self,
        id: SectionId,
        removed: &[(u32, Vec<u32>)],
        added: Vec<PolicyPart>,
        sink: &mut Sink,
    ) -> Vec<String> {
        let mut touched: Vec<u32> = removed
            .iter()
            .flat_map(|(_, peers)| peers.iter().copied())
            .chain(added.iter().flat_map(|p| p.iter().map(|(peer, _)| *peer)))
            .collect();
        touched.sort_unstable();
        touched.dedup();
        // The entries of touched peers that have some now (none when building afresh).
        let old: FxHashMap<u32, PeerEntries> = touched
            .iter()
            .filter(|p| self.peers.contains_key(p))
            .map(|p| (*p, self.entries(id, *p)))
            .collect();
        for (tag, peers) in removed {
            for peer in peers {
                if let Some(cs) = self.peers.get_mut(peer) {
                    cs.retain(|c| c.policy != *tag);
                    if cs.is_empty() {
                        self.peers.remove(peer);
                    }
                }
            }
        }
        // Sized once: a large policy adds 100,000 peers, and regrowing moves them all.
        self.peers
            .reserve(touched.len().saturating_sub(self.peers.len()));
        sink.reserve(touched.len());
        for part in added {
            for (peer, c) in part {
                // Most peers have one contribution: no room for more until needed.
                self.peers
                    .entry(peer)
                    .or_insert_with(|| Vec::with_capacity(1))
                    .push(c);
            }
        }
        let mut problems = Vec::new();
        let none = PeerEntries::default();
        for peer in touched {
            let old = old.get(&peer).unwrap_or(&none);
            let new = self.entries(id, peer);
            self.count(peer, old, false);
            self.count(peer, &new, true);
            sink.replace(old, &new);
            problems.extend(new.problem);
        }
        problems
    }

    /// Removes every entry of this section (its profile is gone).
    pub fn clear(&mut self, id: SectionId, sink: &mut Sink) {
        for (peer, cs) in std::mem::take(&mut self.peers) {
            sink.replace(&emit_peer(id, peer, &cs), &PeerEntries::default());
        }
        *self = Section::default();
    }

    fn entries(&self, id: SectionId, peer: u32) -> PeerEntries {
        match self.peers.get(&peer) {
            Some(cs) => emit_peer(id, peer, cs),
            None => PeerEntries::default(),
        }
    }

    fn count(&mut self, peer: u32, e: &PeerEntries, add: bool) {
        let step = |n: &mut u32, yes: bool| {
            if yes {
                *n = if add { *n + 1 } else { *n - 1 };
            }
        };
        let rules = !e.policy.is_empty() || !e.port_ranges.is_empty();
        if peer == IDENTITY_ANY {
            if rules {
                self.any = add;
            }
        } else {
            step(&mut self.specific, rules);
        }
        step(&mut self.with_ranges, !e.port_ranges.is_empty());
        step(&mut self.with_source_ports, e.source_ports.is_some());
    }

    /// The peer, range and source-port bits of the section's `dir_flags`.
    pub fn flags(&self) -> u8 {
        let mut f = 0;
        if self.specific > 0 {
            f |= dir_flags::PEER_SPECIFIC;
        }
        if self.any {
            f |= dir_flags::PEER_ANY;
        }
        if self.with_ranges > 0 {
            f |= dir_flags::HAS_RANGES;
        }
        if self.with_source_ports > 0 {
            f |= dir_flags::HAS_SOURCE_PORTS;
        }
        f
    }
}
