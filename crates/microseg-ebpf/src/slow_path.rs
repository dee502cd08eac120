//! Packets without a current session: judge them by policy and open (or refresh) their
//! session. Reached by tail call from the fast path, which already parsed and counted.

use aya_ebpf::{helpers::bpf_ktime_get_coarse_ns, programs::TcContext};
use microseg_common::{session_flags as sf, *};

use crate::{
    events::emit,
    fast_path::{count_rule, established, finish, record_first_fragment, session_event, DROP},
    maps::*,
    parse::{self, Packet},
    policy::{identity_of, judge, Judgement, Query},
    session::{initial_state, session_key},
};

#[inline(always)]
pub fn handle(ctx: &TcContext) -> i32 {
    let Some(cfg) = MSEG_CONFIG.get(0) else {
        return DROP;
    };
    let Some(stats) = MSEG_STATS.get_ptr_mut(0) else {
        return DROP;
    };
    let stats = unsafe { &mut *stats };
    let Some(h) = MSEG_HANDOFF.get(0) else {
        return finish(stats, verdict::DENY);
    };
    let pkt = h.pkt;
    let (len, ifindex, direction) = (h.len, h.ifindex, h.direction & 1);
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let (key, src_is_lo) = session_key(ifindex, &pkt);

    let stale = if h.stale_session {
        MSEG_SESSIONS.get_ptr_mut(&key)
    } else {
        None
    };
    let (verdict, rule_id) = match stale {
        Some(s) => {
            let s = unsafe { &mut *s };
            stats.session_hits += 1;
            if s.generation != cfg.generation {
                rejudge(cfg, stats, &key, s, now);
            }
            established(stats, &key, s, &pkt, src_is_lo, now, len)
        }
        None => {
            stats.session_misses += 1;
            new_session(ctx, cfg, stats, &key, src_is_lo, &pkt, direction, now, len)
        }
    };
    record_first_fragment(ifindex, &pkt, verdict, rule_id, stats);
    finish(stats, verdict)
}

/// The first packet of a connection: judge it and open its session.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn new_session(
    ctx: &TcContext,
    cfg: &Config,
    stats: &mut Stats,
    key: &SessionKey,
    src_is_lo: bool,
    pkt: &Packet,
    direction: u8,
    now: u64,
    len: u64,
) -> (u8, u32) {
    if parse::is_icmp_error(pkt) && icmp_error_related(ctx, key.ifindex, pkt) {
        stats.icmp_related += 1;
        return (verdict::ALLOW, RULE_NONE);
    }
    let slot = cfg.active_slot & 1;
    let ep_key = EndpointKey {
        slot,
        ifindex: key.ifindex,
    };
    let Some(ep) = (unsafe { MSEG_ENDPOINTS.get(&ep_key) }) else {
        // An interface with no endpoint in this slot has no policy: open.
        return (verdict::ALLOW, RULE_NONE);
    };
    if direction == direction::EGRESS && spoofed(slot, key.ifindex, ep, pkt) {
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
            sport: pkt.sport,
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
        if MSEG_SESSIONS.insert(key, &s, 0).is_ok() {
            stats.sessions_created += 1;
        }
    }
    count_rule(j.rule_id, len);
    emit(stats, |e| {
        e.time_ns = now;
        e.packets = 1;
        e.bytes = len;
        e.ifindex = key.ifindex;
        e.rule_id = j.rule_id;
        e.audit_rule_id = j.audit_rule_id;
        e.peer_identity = j.peer_identity;
        e.local_identity = ep.identity;
        e.src_addr = pkt.src;
        e.dst_addr = pkt.dst;
        e.src_port = pkt.sport;
        e.dst_port = pkt.dport;
        e.kind = event_kind::NEW;
        e.direction = direction;
        e.verdict = j.verdict;
        e.audit_verdict = j.audit_verdict;
        e.protocol = pkt.protocol;
    });
    (j.verdict, j.rule_id)
}

/// The policy changed since this session was judged: judge its originator again.
#[inline(always)]
fn rejudge(cfg: &Config, stats: &mut Stats, key: &SessionKey, s: &mut Session, now: u64) {
    stats.rejudged += 1;
    let slot = cfg.active_slot & 1;
    let direction = s.orig_direction();
    let (src, sport, dst, dport) = key.orig_tuple(s);
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
                    sport,
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

/// Egress from an address the workload does not own: dropped, so no workload can borrow
/// another's identity. Link-local and unspecified IPv6 sources (ND, MLD, DAD) and the
/// unspecified IPv4 source (DHCP) are exempt: they name no identity and are not routed.
#[inline(always)]
fn spoofed(slot: u32, ifindex: u32, ep: &EndpointInfo, pkt: &Packet) -> bool {
    let need = if pkt.is_v6 {
        let link_local = u32::from_be(pkt.src[0]) >> 22 == 0x3fa;
        let unspecified = pkt.src == [0; 4];
        !link_local && !unspecified && ep.flags & endpoint_flags::VERIFY_SOURCE_V6 != 0
    } else {
        pkt.src[3] != 0 && ep.flags & endpoint_flags::VERIFY_SOURCE_V4 != 0
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
