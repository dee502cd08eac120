//! Turning the rules of one endpoint profile into policy entries.
//!
//! The kernel looks up, per peer class, exact port → port range → any port → any protocol
//! and stops at the first hit. So every entry carries the best rule among itself and all
//! less specific rules of the same peer: the winner is resolved here, once, and not in
//! the kernel.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use microseg_common::{
    dir_flags, policy_key, policy_kind, proto, PolicyEntry, PolicyKey, PortRangeEntry,
    PortRangeTable, SourcePortEntry, SourcePortTable, IDENTITY_ANY, MAX_PORT_RANGES,
    MAX_SOURCE_PORT_RULES,
};

/// (rank, rule id): lower wins, in the kernel too.
pub type Best = (u32, u32);

/// An inclusive port interval and its winner.
type Interval = (u16, u16, Best);

/// Intervals up to this many ports become single-port entries; wider ones range tables.
pub const EXPAND_LIMIT: u32 = 64;

fn better(a: Option<Best>, b: Option<Best>) -> Option<Best> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

#[derive(Default)]
struct ProtoRules {
    any_port: Option<Best>,
    ranges: Vec<(u16, u16, Best)>,
}

#[derive(Default)]
struct PeerRules {
    any_protocol: Option<Best>,
    protocols: BTreeMap<u8, ProtoRules>,
}

/// The rules of one (profile, tier, direction), gathered by peer.
#[derive(Default)]
pub struct Section {
    peers: BTreeMap<u32, PeerRules>,
    /// Rules that also match source ports: they stay unfolded, in a small table per peer.
    source_ports: BTreeMap<u32, Vec<SourcePortEntry>>,
}

/// Where the compiled tables go.
pub struct Output<'a> {
    pub policy: &'a mut HashMap<PolicyKey, PolicyEntry>,
    pub port_ranges: &'a mut HashMap<PolicyKey, PortRangeTable>,
    pub source_ports: &'a mut HashMap<PolicyKey, SourcePortTable>,
    /// What could not be compiled; the caller must not apply the result.
    pub problems: &'a mut Vec<super::Problem>,
}

impl Section {
    /// Adds a rule that matches `peers` (IDENTITY_ANY for any) on `ports`
    /// (protocol, optional inclusive range); empty `ports` means any protocol.
    pub fn add(&mut self, best: Best, peers: &[u32], ports: &[(u8, Option<(u16, u16)>)]) {
        for peer in peers {
            let p = self.peers.entry(*peer).or_default();
            if ports.is_empty() {
                p.any_protocol = better(p.any_protocol, Some(best));
            }
            for (proto, range) in ports {
                let r = p.protocols.entry(*proto).or_default();
                match range {
                    None => r.any_port = better(r.any_port, Some(best)),
                    Some((a, b)) => r.ranges.push((*a, *b, best)),
                }
            }
        }
    }

    /// Adds a rule with `sourcePorts`: one entry per peer, destination and source range.
    pub fn add_source_ports(
        &mut self,
        best: Best,
        peers: &[u32],
        ports: &[(u8, Option<(u16, u16)>)],
        source_ports: &[(u16, u16)],
    ) {
        // No ports listed: any protocol that has ports (protocol 0 in the table).
        let dests: Vec<(u8, (u16, u16))> = if ports.is_empty() {
            vec![(0, (0, u16::MAX))]
        } else {
            ports
                .iter()
                .filter(|(p, _)| proto::has_ports(*p))
                .map(|(p, r)| (*p, r.unwrap_or((0, u16::MAX))))
                .collect()
        };
        for peer in peers {
            let table = self.source_ports.entry(*peer).or_default();
            for (protocol, (dport_start, dport_end)) in &dests {
                for (sport_start, sport_end) in source_ports {
                    table.push(SourcePortEntry {
                        protocol: *protocol,
                        _pad: [0; 3],
                        dport_start: *dport_start,
                        dport_end: *dport_end,
                        sport_start: *sport_start,
                        sport_end: *sport_end,
                        rank: best.0,
                        rule_id: best.1,
                    });
                }
            }
        }
    }

    /// Writes the section's entries; returns its `dir_flags` (peer, range and source-port
    /// bits). `workload` and `dir` name the section in problems.
    pub fn emit(
        &self,
        profile: u32,
        tier: u8,
        direction: u8,
        workload: &str,
        dir: crate::Direction,
        out: &mut Output,
    ) -> u8 {
        let policy = &mut *out.policy;
        let port_ranges = &mut *out.port_ranges;
        let mut flags = 0;
        for (peer, entries) in &self.source_ports {
            if entries.is_empty() {
                continue;
            }
            if entries.len() > MAX_SOURCE_PORT_RULES {
                out.problems.push(super::Problem {
                    workload: workload.to_string(),
                    message: format!(
                        "{dir}: {} rule entries with sourcePorts apply to one peer; the data plane holds at most {MAX_SOURCE_PORT_RULES}",
                        entries.len()
                    ),
                });
                continue;
            }
            flags |= dir_flags::HAS_SOURCE_PORTS;
            let mut table = SourcePortTable {
                count: entries.len() as u32,
                ..Default::default()
            };
            table.entries[..entries.len()].copy_from_slice(entries);
            let key = PolicyKey {
                profile,
                peer: *peer,
                port: 0,
                protocol: 0,
                flags: policy_key::flags(0, tier, direction, policy_kind::PORT),
            };
            out.source_ports.insert(key, table);
        }
        for (peer, rules) in &self.peers {
            flags |= if *peer == IDENTITY_ANY {
                dir_flags::PEER_ANY
            } else {
                dir_flags::PEER_SPECIFIC
            };
            let key = |kind: u8, protocol: u8, port: u16| PolicyKey {
                profile,
                peer: *peer,
                port,
                protocol,
                flags: policy_key::flags(0, tier, direction, kind),
            };
            if let Some(b) = rules.any_protocol {
                policy.insert(key(policy_kind::ANY_PROTOCOL, 0, 0), entry(b));
            }
            for (proto, r) in &rules.protocols {
                let base = better(r.any_port, rules.any_protocol);
                if r.any_port.is_some() {
                    policy.insert(
                        key(policy_kind::ANY_PORT, *proto, 0),
                        entry(base.expect("set")),
                    );
                }
                let intervals = resolve_intervals(&r.ranges, base);
                let (exact, wide) = split_wide(intervals);
                for (a, b, best) in exact {
                    for port in a..=b {
                        policy.insert(key(policy_kind::PORT, *proto, port), entry(best));
                    }
                }
                if !wide.is_empty() {
                    flags |= dir_flags::HAS_RANGES;
                    let mut table = PortRangeTable {
                        count: wide.len() as u32,
                        ..Default::default()
                    };
                    for (i, (a, b, best)) in wide.into_iter().enumerate() {
                        table.ranges[i] = PortRangeEntry {
                            start: a,
                            end: b,
                            rank: best.0,
                            rule_id: best.1,
                        };
                    }
                    port_ranges.insert(key(policy_kind::RANGES, *proto, 0), table);
                }
            }
        }
        flags
    }
}

fn entry(b: Best) -> PolicyEntry {
    PolicyEntry {
        rank: b.0,
        rule_id: b.1,
    }
}

/// Disjoint, sorted intervals covered by at least one range, each with its winner
/// (folding in `base`, the any-port/any-protocol winner); neighbours with the same winner merged.
fn resolve_intervals(ranges: &[(u16, u16, Best)], base: Option<Best>) -> Vec<(u16, u16, Best)> {
    if ranges.is_empty() {
        return Vec::new();
    }
    let mut bounds: Vec<u32> = ranges
        .iter()
        .flat_map(|(a, b, _)| [*a as u32, *b as u32 + 1])
        .collect();
    bounds.sort_unstable();
    bounds.dedup();
    let mut sorted: Vec<&(u16, u16, Best)> = ranges.iter().collect();
    sorted.sort_by_key(|r| r.0);
    let mut next = 0;
    // Active ranges by winner, with their end; ended ones are dropped lazily.
    let mut active: BinaryHeap<Reverse<(Best, u16)>> = BinaryHeap::new();
    let mut out: Vec<(u16, u16, Best)> = Vec::new();
    for w in bounds.windows(2) {
        let (start, end) = (w[0], w[1] - 1);
        while next < sorted.len() && sorted[next].0 as u32 <= start {
            active.push(Reverse((sorted[next].2, sorted[next].1)));
            next += 1;
        }
        while let Some(Reverse((_, e))) = active.peek() {
            if (*e as u32) < start {
                active.pop();
            } else {
                break;
            }
        }
        let Some(Reverse((best, _))) = active.peek() else {
            continue;
        };
        let best = better(Some(*best), base).expect("set");
        match out.last_mut() {
            Some(last) if last.2 == best && last.1 as u32 + 1 == start => last.1 = end as u16,
            _ => out.push((start as u16, end as u16, best)),
        }
    }
    out
}

/// Narrow intervals become single ports; the widest (up to the table's size) stay ranges.
fn split_wide(intervals: Vec<Interval>) -> (Vec<Interval>, Vec<Interval>) {
    let width = |i: &(u16, u16, Best)| i.1 as u32 - i.0 as u32 + 1;
    let (mut wide, mut exact): (Vec<_>, Vec<_>) =
        intervals.into_iter().partition(|i| width(i) > EXPAND_LIMIT);
    if wide.len() > MAX_PORT_RANGES {
        wide.sort_by_key(|i| Reverse(width(i)));
        exact.extend(wide.drain(MAX_PORT_RANGES..));
    }
    wide.sort_by_key(|i| i.0);
    (exact, wide)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_ranges_resolve_to_the_best_rule_per_interval() {
        let ranges = [(100, 200, (8, 3)), (150, 300, (4, 4))];
        let got = resolve_intervals(&ranges, None);
        assert_eq!(got, vec![(100, 149, (8, 3)), (150, 300, (4, 4))]);
    }

    #[test]
    fn any_port_rules_are_folded_into_ranges() {
        let ranges = [(10, 20, (8, 3))];
        assert_eq!(
            resolve_intervals(&ranges, Some((2, 9))),
            vec![(10, 20, (2, 9))]
        );
    }

    #[test]
    fn too_many_wide_ranges_fall_back_to_single_ports() {
        let intervals: Vec<_> = (0..20u16)
            .map(|i| (i * 1000, i * 1000 + 100 + i, (1, 2)))
            .collect();
        let (exact, wide) = split_wide(intervals);
        assert_eq!(wide.len(), MAX_PORT_RANGES);
        assert_eq!(exact.len(), 4);
        assert!(wide.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
