//! Turning what the rules of one section say about one peer into policy entries.
//!
//! The kernel looks up, per peer class, exact port → port range → any port → any protocol
//! and stops at the first hit. So every entry carries the best rule among itself and all
//! less specific rules of the same peer: the winner is resolved here, once, and not in
//! the kernel. A peer's entries depend only on that peer's contributions, which is what
//! lets an update recompute just the peers a change touches.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use microseg_common::{
    policy_key, policy_kind, proto, PolicyEntry, PolicyKey, PortRangeEntry, PortRangeTable,
    SourcePortEntry, SourcePortTable, MAX_PORT_RANGES, MAX_SOURCE_PORT_RULES,
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

/// What one rule says about the traffic of one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Match {
    AnyProtocol,
    AnyPort(u8),
    /// Protocol and inclusive destination port range.
    Ports(u8, u16, u16),
    /// A rule with `sourcePorts`: kept unfolded, in a small table per peer.
    SourcePorts(SourcePortEntry),
}

/// One rule's [`Match`] for one peer, tagged with the policy it came from so that an
/// update of that policy can take it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Contribution {
    pub policy: u32,
    pub best: Best,
    pub what: Match,
}

/// The matches of one rule (the same for each of its peers); empty `ports` means any
/// protocol.
pub fn rule_matches(
    best: Best,
    ports: &[(u8, Option<(u16, u16)>)],
    source_ports: &[(u16, u16)],
) -> Vec<Match> {
    if source_ports.is_empty() {
        if ports.is_empty() {
            return vec![Match::AnyProtocol];
        }
        return ports
            .iter()
            .map(|(p, r)| match r {
                None => Match::AnyPort(*p),
                Some((a, b)) => Match::Ports(*p, *a, *b),
            })
            .collect();
    }
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
    let mut out = Vec::new();
    for (protocol, (dport_start, dport_end)) in &dests {
        for (sport_start, sport_end) in source_ports {
            out.push(Match::SourcePorts(SourcePortEntry {
                protocol: *protocol,
                _pad: [0; 3],
                dport_start: *dport_start,
                dport_end: *dport_end,
                sport_start: *sport_start,
                sport_end: *sport_end,
                rank: best.0,
                rule_id: best.1,
            }));
        }
    }
    out
}

/// Names one (profile, tier, direction) in keys.
#[derive(Clone, Copy, Debug)]
pub struct SectionId {
    pub profile: u32,
    pub tier: u8,
    pub direction: u8,
}

impl SectionId {
    fn key(&self, peer: u32, kind: u8, protocol: u8, port: u16) -> PolicyKey {
        PolicyKey {
            profile: self.profile,
            peer,
            port,
            protocol,
            flags: policy_key::flags(0, self.tier, self.direction, kind),
        }
    }
}

/// The entries one peer of one section owns (no other peer writes these keys).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerEntries {
    pub policy: Vec<(PolicyKey, PolicyEntry)>,
    pub port_ranges: Vec<(PolicyKey, PortRangeTable)>,
    /// Boxed: most peers have none, and the table is large.
    pub source_ports: Option<Box<(PolicyKey, SourcePortTable)>>,
    /// What the data plane cannot hold for this peer (then no source-port table is made).
    pub problem: Option<String>,
}

#[derive(Default)]
struct ProtoRules {
    protocol: u8,
    any_port: Option<Best>,
    ranges: Vec<Interval>,
}

/// The entries of `peer` in section `id`, from all its contributions.
pub fn emit_peer(id: SectionId, peer: u32, contributions: &[Contribution]) -> PeerEntries {
    if let [only] = contributions {
        if let Some(out) = emit_single(id, peer, only) {
            return out;
        }
    }
    let mut out = PeerEntries::default();
    let mut any_protocol = None;
    let mut protocols: Vec<ProtoRules> = Vec::new();
    let mut sports: Vec<SourcePortEntry> = Vec::new();
    fn of(protocols: &mut Vec<ProtoRules>, p: u8) -> &mut ProtoRules {
        let i = match protocols.iter().position(|r| r.protocol == p) {
            Some(i) => i,
            None => {
                protocols.push(ProtoRules {
                    protocol: p,
                    ..Default::default()
                });
                protocols.len() - 1
            }
        };
        &mut protocols[i]
    }
    for c in contributions {
        match c.what {
            Match::AnyProtocol => any_protocol = better(any_protocol, Some(c.best)),
            Match::AnyPort(p) => {
                let r = of(&mut protocols, p);
                r.any_port = better(r.any_port, Some(c.best));
            }
            Match::Ports(p, a, b) => of(&mut protocols, p).ranges.push((a, b, c.best)),
            Match::SourcePorts(e) => sports.push(e),
        }
    }
    if !sports.is_empty() {
        if sports.len() > MAX_SOURCE_PORT_RULES {
            out.problem = Some(format!(
                "{} rule entries with sourcePorts apply to one peer; the data plane holds at most {MAX_SOURCE_PORT_RULES}",
                sports.len()
            ));
        } else {
            // Best first: the kernel takes the first match. The other fields fix the order
            // so that equal tables compare equal.
            sports.sort_by_key(|e| {
                (
                    e.rank,
                    e.rule_id,
                    e.protocol,
                    e.dport_start,
                    e.dport_end,
                    e.sport_start,
                    e.sport_end,
                )
            });
            let mut table = SourcePortTable {
                count: sports.len() as u32,
                ..Default::default()
            };
            table.entries[..sports.len()].copy_from_slice(&sports);
            out.source_ports = Some(Box::new((id.key(peer, policy_kind::PORT, 0, 0), table)));
        }
    }
    if let Some(b) = any_protocol {
        out.policy
            .push((id.key(peer, policy_kind::ANY_PROTOCOL, 0, 0), entry(b)));
    }
    for r in &protocols {
        let base = better(r.any_port, any_protocol);
        if r.any_port.is_some() {
            out.policy.push((
                id.key(peer, policy_kind::ANY_PORT, r.protocol, 0),
                entry(base.expect("set")),
            ));
        }
        let (exact, wide) = split_wide(resolve_intervals(&r.ranges, base));
        for (a, b, best) in exact {
            for port in a..=b {
                out.policy.push((
                    id.key(peer, policy_kind::PORT, r.protocol, port),
                    entry(best),
                ));
            }
        }
        if !wide.is_empty() {
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
            out.port_ranges
                .push((id.key(peer, policy_kind::RANGES, r.protocol, 0), table));
        }
    }
    out
}

/// The entries of a peer with one contribution that needs no intervals resolved (most
/// peers of a large CIDR policy): what the general path gives, without its vectors.
fn emit_single(id: SectionId, peer: u32, c: &Contribution) -> Option<PeerEntries> {
    let policy = match c.what {
        Match::AnyProtocol => vec![(id.key(peer, policy_kind::ANY_PROTOCOL, 0, 0), entry(c.best))],
        Match::AnyPort(p) => vec![(id.key(peer, policy_kind::ANY_PORT, p, 0), entry(c.best))],
        Match::Ports(p, a, b) if b >= a && u32::from(b - a) < EXPAND_LIMIT => (a..=b)
            .map(|port| (id.key(peer, policy_kind::PORT, p, port), entry(c.best)))
            .collect(),
        _ => return None,
    };
    Some(PeerEntries {
        policy,
        ..Default::default()
    })
}

fn entry(b: Best) -> PolicyEntry {
    PolicyEntry {
        rank: b.0,
        rule_id: b.1,
    }
}

/// Disjoint, sorted intervals covered by at least one range, each with its winner
/// (folding in `base`, the any-port/any-protocol winner); neighbours with the same winner merged.
fn resolve_intervals(ranges: &[Interval], base: Option<Best>) -> Vec<Interval> {
    if ranges.is_empty() {
        return Vec::new();
    }
    let mut bounds: Vec<u32> = ranges
        .iter()
        .flat_map(|(a, b, _)| [*a as u32, *b as u32 + 1])
        .collect();
    bounds.sort_unstable();
    bounds.dedup();
    let mut sorted: Vec<&Interval> = ranges.iter().collect();
    sorted.sort_by_key(|r| r.0);
    let mut next = 0;
    // Active ranges by winner, with their end; ended ones are dropped lazily.
    let mut active: BinaryHeap<Reverse<(Best, u16)>> = BinaryHeap::new();
    let mut out: Vec<Interval> = Vec::new();
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
    let width = |i: &Interval| i.1 as u32 - i.0 as u32 + 1;
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

    #[test]
    fn one_contribution_gives_what_the_general_path_gives() {
        let id = SectionId {
            profile: 3,
            tier: 1,
            direction: 1,
        };
        let whats = [
            Match::AnyProtocol,
            Match::AnyPort(17),
            Match::Ports(6, 443, 443),
            Match::Ports(6, 1000, 1063),
            Match::Ports(6, 1000, 1064),
            Match::Ports(17, 0, u16::MAX),
        ];
        for what in whats {
            let c = Contribution {
                policy: 1,
                best: (5, 77),
                what,
            };
            // Twice the same contribution takes the general path and gives the same entries.
            let general = emit_peer(id, 9, &[c, c]);
            assert_eq!(emit_peer(id, 9, &[c]), general, "{what:?}");
            assert!(!general.policy.is_empty() || !general.port_ranges.is_empty());
        }
    }

    #[test]
    fn a_peer_entries_do_not_depend_on_the_order_of_its_contributions() {
        let id = SectionId {
            profile: 1,
            tier: 0,
            direction: 0,
        };
        let mut cs = Vec::new();
        for (i, m) in [
            Match::Ports(6, 80, 90),
            Match::AnyPort(17),
            Match::Ports(6, 85, 200),
            Match::AnyProtocol,
        ]
        .into_iter()
        .enumerate()
        {
            cs.push(Contribution {
                policy: 1,
                best: (10 - i as u32, i as u32 + 2),
                what: m,
            });
        }
        for m in rule_matches((3, 9), &[(6, Some((1, 2)))], &[(1000, 2000), (5, 6)]) {
            cs.push(Contribution {
                policy: 2,
                best: (3, 9),
                what: m,
            });
        }
        let forward = emit_peer(id, 7, &cs);
        cs.reverse();
        let mut backward = emit_peer(id, 7, &cs);
        let mut f = forward.clone();
        f.policy.sort_by_key(|(k, _)| (k.flags, k.protocol, k.port));
        backward
            .policy
            .sort_by_key(|(k, _)| (k.flags, k.protocol, k.port));
        assert_eq!(f.policy, backward.policy);
        assert_eq!(forward.source_ports, backward.source_ports);
        assert_eq!(forward.port_ranges, backward.port_ranges);
    }
}
