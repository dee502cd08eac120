//! Policy lookup: the peer's identity, then at most four hash lookups per peer class
//! (the peer's own identity, then "any peer"). Userspace has folded every less specific
//! rule into the more specific entries, so each class stops at its first hit.

use aya_ebpf::maps::lpm_trie::Key;
use microseg_common::*;

use crate::maps::{
    MSEG_HOST_IDENTITIES, MSEG_IDENTITIES, MSEG_POLICY, MSEG_PORT_RANGES, MSEG_SPORT_RULES,
};

/// What the policy says about one packet direction.
#[derive(Clone, Copy, Default)]
pub struct Judgement {
    pub verdict: u8,
    pub audit_verdict: u8,
    pub rule_id: u32,
    pub audit_rule_id: u32,
    pub peer_identity: u32,
}

/// Looks up the identity of an address: exact address first, then the longest CIDR;
/// no entry means "world".
#[inline(always)]
pub fn identity_of(slot: u32, addr: &[u32; 4]) -> u32 {
    let host = IpKey { slot, addr: *addr };
    // SAFETY: a map without preallocation frees a removed element only after every
    // program that could see it has returned, so the reference stays valid.
    if let Some(e) = unsafe { MSEG_HOST_IDENTITIES.get(&host) } {
        return e.identity;
    }
    let key = Key::new(32 + 128, host);
    match MSEG_IDENTITIES.get(&key) {
        Some(e) => e.identity,
        None => IDENTITY_WORLD,
    }
}

/// The question a policy lookup answers.
pub struct Query {
    pub slot: u32,
    pub direction: u8,
    pub peer_identity: u32,
    pub protocol: u8,
    /// Ports, host byte order; meaningful when `has_ports`.
    pub sport: u16,
    pub dport: u16,
    pub has_ports: bool,
}

#[inline(always)]
pub fn judge(ep: &EndpointInfo, q: &Query) -> Judgement {
    let mut j = Judgement {
        peer_identity: q.peer_identity,
        ..Default::default()
    };
    let (verdict, rule) = resolve_tier(ep, q, tier::ENFORCE);
    j.verdict = verdict;
    j.rule_id = rule;
    if verdict == verdict::DENY && ep.flags & endpoint_flags::AUDIT_MODE != 0 {
        j.verdict = verdict::AUDIT;
    }
    let audit_flags = ep.dir_flags[(tier::AUDIT * 2 + q.direction) as usize & 3];
    if audit_flags & dir_flags::SELECTED != 0 {
        let (verdict, rule) = resolve_tier(ep, q, tier::AUDIT);
        j.audit_verdict = verdict;
        j.audit_rule_id = rule;
    }
    j
}

#[inline(always)]
fn resolve_tier(ep: &EndpointInfo, q: &Query, tier: u8) -> (u8, u32) {
    let flags = ep.dir_flags[(tier * 2 + q.direction) as usize & 3];
    let mut best = PolicyEntry {
        rank: u32::MAX,
        rule_id: RULE_NONE,
    };
    if flags & dir_flags::PEER_SPECIFIC != 0 {
        if let Some(e) = lookup_class(ep.profile, q, tier, flags, q.peer_identity) {
            best = e;
        }
    }
    if flags & dir_flags::PEER_ANY != 0 {
        if let Some(e) = lookup_class(ep.profile, q, tier, flags, IDENTITY_ANY) {
            if e.beats(&best) {
                best = e;
            }
        }
    }
    if flags & dir_flags::HAS_SOURCE_PORTS != 0 && q.has_ports {
        for peer in [q.peer_identity, IDENTITY_ANY] {
            if let Some(e) = lookup_source_ports(ep.profile, q, tier, peer) {
                if e.beats(&best) {
                    best = e;
                }
            }
        }
    }
    if best.rule_id != RULE_NONE {
        (rank_verdict(best.rank), best.rule_id)
    } else if flags & dir_flags::HAS_SECTION != 0 {
        (verdict::DENY, RULE_DEFAULT_DENY)
    } else {
        (verdict::ALLOW, RULE_NONE)
    }
}

/// The winning entry for one peer class: exact port, port range, any port, any protocol.
#[inline(always)]
fn lookup_class(profile: u32, q: &Query, tier: u8, flags: u8, peer: u32) -> Option<PolicyEntry> {
    let mut key = PolicyKey {
        profile,
        peer,
        port: q.dport,
        protocol: q.protocol,
        flags: policy_key::flags(q.slot as u8, tier, q.direction, policy_kind::PORT),
    };
    // SAFETY: maps without preallocation free a removed element only after every program
    // that could see it has returned, so references stay valid (here and below).
    if q.has_ports {
        if let Some(e) = unsafe { MSEG_POLICY.get(&key) } {
            return Some(*e);
        }
        if flags & dir_flags::HAS_RANGES != 0 {
            key.port = 0;
            key.flags = policy_key::flags(q.slot as u8, tier, q.direction, policy_kind::RANGES);
            // SAFETY: as above.
            if let Some(table) = unsafe { MSEG_PORT_RANGES.get(&key) } {
                if let Some(e) = scan_ranges(table, q.dport) {
                    return Some(e);
                }
            }
        }
    }
    key.port = 0;
    key.flags = policy_key::flags(q.slot as u8, tier, q.direction, policy_kind::ANY_PORT);
    // SAFETY: as above.
    if let Some(e) = unsafe { MSEG_POLICY.get(&key) } {
        return Some(*e);
    }
    key.protocol = 0;
    key.flags = policy_key::flags(q.slot as u8, tier, q.direction, policy_kind::ANY_PROTOCOL);
    // SAFETY: as above.
    unsafe { MSEG_POLICY.get(&key) }.copied()
}

#[inline(always)]
fn scan_ranges(table: &PortRangeTable, port: u16) -> Option<PolicyEntry> {
    for i in 0..MAX_PORT_RANGES {
        if i as u32 >= table.count {
            break;
        }
        let r = &table.ranges[i];
        if port < r.start {
            break;
        }
        if port <= r.end {
            return Some(PolicyEntry {
                rank: r.rank,
                rule_id: r.rule_id,
            });
        }
    }
    None
}

/// The best rule with `sourcePorts` for one peer class: the first match of a small table
/// sorted best first, in a bounded scan.
#[inline(always)]
fn lookup_source_ports(profile: u32, q: &Query, tier: u8, peer: u32) -> Option<PolicyEntry> {
    let key = PolicyKey {
        profile,
        peer,
        port: 0,
        protocol: 0,
        flags: policy_key::flags(q.slot as u8, tier, q.direction, policy_kind::PORT),
    };
    // SAFETY: a map without preallocation frees a removed element only after every
    // program that could see it has returned, so the reference stays valid.
    let table = unsafe { MSEG_SPORT_RULES.get(&key) }?;
    for i in 0..MAX_SOURCE_PORT_RULES {
        if i as u32 >= table.count {
            break;
        }
        let e = &table.entries[i];
        if (e.protocol == 0 || e.protocol == q.protocol)
            && e.dport_start <= q.dport
            && q.dport <= e.dport_end
            && e.sport_start <= q.sport
            && q.sport <= e.sport_end
        {
            return Some(PolicyEntry {
                rank: e.rank,
                rule_id: e.rule_id,
            });
        }
    }
    None
}
