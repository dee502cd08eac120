//! The path every packet takes: parse, find its session (the hot path ends there), else
//! judge it by policy and open a session.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::bpf_ktime_get_ns,
    programs::TcContext,
};
use microseg_common::{session_flags as sf, *};

use crate::{
    events::{emit, Flow, Outcome},
    maps::*,
    parse::{self, Packet, Parsed, FRAG_FIRST, FRAG_LATER},
    policy::{identity_of, judge, Judgement, Query},
    session::{advance, initial_state, orig_tuple, session_key, starts_over},
};

const PASS: i32 = TC_ACT_OK as i32;
const DROP: i32 = TC_ACT_SHOT as i32;

#[inline(always)]
pub fn handle(ctx: &TcContext, direction: u8) -> i32 {
    let Some(cfg) = MSEG_CONFIG.get(0) else {
        return DROP;
    };
    let Some(stats) = MSEG_STATS.get_ptr_mut(0) else {
        return DROP;
    };
    let stats = unsafe { &mut *stats };
    let len = ctx.len() as u64;
    stats.packets += 1;
    stats.bytes += len;

    let mut pkt = Packet::default();
    match parse::parse(ctx, &mut pkt) {
        Parsed::Ip => {}
        Parsed::Malformed => {
            stats.parse_errors += 1;
            return DROP;
        }
        Parsed::Arp => {
            stats.arp += 1;
            return PASS;
        }
        Parsed::NeighborDiscovery => {
            stats.neighbor_discovery += 1;
            return PASS;
        }
        Parsed::NonIp => {
            stats.non_ip += 1;
            if cfg.flags & config_flags::DROP_NON_IP != 0 {
                stats.non_ip_dropped += 1;
                return DROP;
            }
            return PASS;
        }
    }
    if pkt.vlan {
        stats.vlan += 1;
    }
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let verdict = if pkt.fragment == FRAG_LATER {
        later_fragment(ifindex, &pkt, stats)
    } else {
        let (verdict, rule_id) = ip_packet(ctx, cfg, stats, ifindex, direction, &pkt, len);
        if pkt.fragment == FRAG_FIRST {
            stats.fragments += 1;
            let entry = FragmentEntry {
                verdict,
                _pad: [0; 3],
                rule_id,
            };
            let _ = MSEG_FRAGMENTS.insert(&fragment_key(ifindex, &pkt), &entry, 0);
        }
        verdict
    };
    count_verdict(stats, verdict);
    if verdict == verdict::DENY {
        DROP
    } else {
        PASS
    }
}

#[inline(always)]
fn count_verdict(stats: &mut Stats, v: u8) {
    match v {
        verdict::DENY => stats.denied += 1,
        verdict::LOG => stats.logged += 1,
        verdict::AUDIT => stats.audited += 1,
        _ => stats.allowed += 1,
    }
}

#[inline(always)]
fn fragment_key(ifindex: u32, pkt: &Packet) -> FragmentKey {
    FragmentKey {
        ifindex,
        src: pkt.src,
        dst: pkt.dst,
        id: pkt.frag_id,
        protocol: pkt.protocol,
        _pad: [0; 3],
    }
}

/// Later fragments carry no ports: they follow their first fragment, or are dropped.
#[inline(always)]
fn later_fragment(ifindex: u32, pkt: &Packet, stats: &mut Stats) -> u8 {
    stats.fragments += 1;
    match unsafe { MSEG_FRAGMENTS.get(&fragment_key(ifindex, pkt)) } {
        Some(e) => e.verdict,
        None => {
            stats.fragments_dropped += 1;
            verdict::DENY
        }
    }
}

/// Judges one non-fragment (or first-fragment) IP packet; returns (verdict, rule id).
#[inline(always)]
fn ip_packet(
    ctx: &TcContext,
    cfg: &Config,
    stats: &mut Stats,
    ifindex: u32,
    direction: u8,
    pkt: &Packet,
    len: u64,
) -> (u8, u32) {
    let now = unsafe { bpf_ktime_get_ns() };
    let (key, src_is_lo) = session_key(ifindex, pkt);
    if let Some(s) = MSEG_SESSIONS.get_ptr_mut(&key) {
        let s = unsafe { &mut *s };
        if !starts_over(s, pkt) {
            stats.session_hits += 1;
            return established(cfg, stats, &key, s, pkt, src_is_lo, now, len);
        }
    }
    stats.session_misses += 1;

    if parse::is_icmp_error(pkt) && icmp_error_related(ctx, ifindex, pkt) {
        stats.icmp_related += 1;
        return (verdict::ALLOW, RULE_NONE);
    }
    let slot = cfg.active_slot & 1;
    let ep_key = EndpointKey { slot, ifindex };
    let Some(ep) = (unsafe { MSEG_ENDPOINTS.get(&ep_key) }) else {
        // An interface with no endpoint in this slot has no policy: open.
        return (verdict::ALLOW, RULE_NONE);
    };
    if direction == direction::EGRESS && spoofed(slot, ifindex, ep, pkt) {
        stats.spoofed += 1;
        return (verdict::DENY, RULE_NONE);
    }
    let peer = if direction == direction::EGRESS {
        &pkt.dst
    } else {
        &pkt.src
    };
    let j = judge(
        ep,
        &Query {
            slot,
            direction,
            peer_identity: identity_of(slot, peer),
            protocol: pkt.protocol,
            dport: pkt.dport,
            has_ports: proto::has_ports(pkt.protocol),
        },
    );
    if cfg.flags & config_flags::NO_SESSION_INSERT == 0 {
        let mut flags = 0;
        if src_is_lo {
            flags |= sf::ORIG_IS_LO;
        }
        if direction == direction::EGRESS {
            flags |= sf::ORIG_EGRESS;
        }
        let s = Session {
            created_ns: now,
            last_seen_ns: now,
            last_event_ns: now,
            packets: [1, 0],
            bytes: [len, 0],
            generation: cfg.generation,
            rule_id: j.rule_id,
            audit_rule_id: j.audit_rule_id,
            peer_identity: j.peer_identity,
            state: initial_state(pkt),
            verdict: j.verdict,
            audit_verdict: j.audit_verdict,
            flags,
            _pad: 0,
        };
        if MSEG_SESSIONS.insert(&key, &s, 0).is_ok() {
            stats.sessions_created += 1;
        }
    }
    count_rule(j.rule_id, len);
    let flow = Flow {
        ifindex,
        direction,
        protocol: pkt.protocol,
        src: pkt.src,
        dst: pkt.dst,
        sport: pkt.sport,
        dport: pkt.dport,
    };
    emit(
        event_kind::NEW,
        now,
        &flow,
        &outcome(&j, ep.identity, 1, len),
        stats,
    );
    (j.verdict, j.rule_id)
}

#[inline(always)]
fn outcome(j: &Judgement, local_identity: u32, packets: u64, bytes: u64) -> Outcome {
    Outcome {
        verdict: j.verdict,
        audit_verdict: j.audit_verdict,
        rule_id: j.rule_id,
        audit_rule_id: j.audit_rule_id,
        peer_identity: j.peer_identity,
        local_identity,
        packets,
        bytes,
    }
}

/// The hot path: a packet of a known session.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn established(
    cfg: &Config,
    stats: &mut Stats,
    key: &SessionKey,
    s: &mut Session,
    pkt: &Packet,
    src_is_lo: bool,
    now: u64,
    len: u64,
) -> (u8, u32) {
    let is_orig = (s.flags & sf::ORIG_IS_LO != 0) == src_is_lo;
    let side = if is_orig { 0 } else { 1 };
    s.packets[side] += 1;
    s.bytes[side] += len;
    s.last_seen_ns = now;
    if s.generation != cfg.generation {
        rejudge(cfg, stats, key, s, now);
    }
    let closed = advance(s, pkt, is_orig);
    count_rule(s.rule_id, len);
    let v = s.verdict;
    if (v == verdict::DENY || v == verdict::LOG || v == verdict::AUDIT)
        && now.wrapping_sub(s.last_event_ns) >= EVENT_INTERVAL_NS
    {
        s.last_event_ns = now;
        let kind = if v == verdict::LOG {
            event_kind::LOG
        } else {
            event_kind::DENY
        };
        session_event(kind, key, s, now, stats);
    }
    if closed && s.flags & sf::ENDED == 0 {
        s.flags |= sf::ENDED;
        session_event(event_kind::END, key, s, now, stats);
    }
    (v, s.rule_id)
}

#[inline(always)]
fn session_event(kind: u8, key: &SessionKey, s: &Session, now: u64, stats: &mut Stats) {
    let (src, sport, dst, dport) = orig_tuple(key, s);
    let flow = Flow {
        ifindex: key.ifindex,
        direction: if s.flags & sf::ORIG_EGRESS != 0 {
            direction::EGRESS
        } else {
            direction::INGRESS
        },
        protocol: key.protocol,
        src,
        dst,
        sport,
        dport,
    };
    let out = Outcome {
        verdict: s.verdict,
        audit_verdict: s.audit_verdict,
        rule_id: s.rule_id,
        audit_rule_id: s.audit_rule_id,
        peer_identity: s.peer_identity,
        local_identity: 0,
        packets: s.packets[0] + s.packets[1],
        bytes: s.bytes[0] + s.bytes[1],
    };
    emit(kind, now, &flow, &out, stats);
}

/// The policy changed since this session was judged: judge its originator again.
#[inline(always)]
fn rejudge(cfg: &Config, stats: &mut Stats, key: &SessionKey, s: &mut Session, now: u64) {
    stats.rejudged += 1;
    let slot = cfg.active_slot & 1;
    let direction = if s.flags & sf::ORIG_EGRESS != 0 {
        direction::EGRESS
    } else {
        direction::INGRESS
    };
    let (src, _, dst, dport) = orig_tuple(key, s);
    let ep_key = EndpointKey {
        slot,
        ifindex: key.ifindex,
    };
    let j = match unsafe { MSEG_ENDPOINTS.get(&ep_key) } {
        Some(ep) => {
            let peer = if direction == direction::EGRESS {
                &dst
            } else {
                &src
            };
            judge(
                ep,
                &Query {
                    slot,
                    direction,
                    peer_identity: identity_of(slot, peer),
                    protocol: key.protocol,
                    dport,
                    has_ports: proto::has_ports(key.protocol),
                },
            )
        }
        None => Judgement {
            verdict: verdict::ALLOW,
            peer_identity: s.peer_identity,
            ..Default::default()
        },
    };
    s.generation = cfg.generation;
    let changed = j.verdict != s.verdict || j.rule_id != s.rule_id;
    s.verdict = j.verdict;
    s.rule_id = j.rule_id;
    s.audit_verdict = j.audit_verdict;
    s.audit_rule_id = j.audit_rule_id;
    s.peer_identity = j.peer_identity;
    if changed {
        s.last_event_ns = now;
        session_event(event_kind::NEW, key, s, now, stats);
    }
}

#[inline(always)]
fn count_rule(rule_id: u32, len: u64) {
    if rule_id == RULE_NONE {
        return;
    }
    if let Some(c) = MSEG_RULE_COUNTERS.get_ptr_mut(rule_id) {
        let c = unsafe { &mut *c };
        c.packets += 1;
        c.bytes += len;
    }
}

/// Egress from an address the workload does not own: dropped, so no workload can borrow
/// another's identity. IPv6 link-local sources are exempt (they never leave the link).
#[inline(always)]
fn spoofed(slot: u32, ifindex: u32, ep: &EndpointInfo, pkt: &Packet) -> bool {
    let need = if pkt.is_v6 {
        let link_local = u32::from_be(pkt.src[0]) >> 22 == 0x3fa;
        !link_local && ep.flags & endpoint_flags::VERIFY_SOURCE_V6 != 0
    } else {
        ep.flags & endpoint_flags::VERIFY_SOURCE_V4 != 0
    };
    if !need {
        return false;
    }
    let key = EndpointAddrKey {
        slot,
        ifindex,
        addr: pkt.src,
    };
    unsafe { MSEG_ENDPOINT_ADDRS.get(&key) }.is_none()
}

/// An ICMP error about a session that is not denied passes with it.
#[inline(always)]
fn icmp_error_related(ctx: &TcContext, ifindex: u32, pkt: &Packet) -> bool {
    let mut inner = Packet::default();
    if !parse::parse_icmp_inner(ctx, pkt, &mut inner) {
        return false;
    }
    let (key, _) = session_key(ifindex, &inner);
    match unsafe { MSEG_SESSIONS.get(&key) } {
        Some(s) => s.verdict != verdict::DENY,
        None => false,
    }
}
