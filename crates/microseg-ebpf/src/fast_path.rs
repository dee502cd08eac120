//! The path every packet takes: parse, then one session lookup. A packet of a session
//! judged under the current policy generation ends here; anything else is handed to the
//! slow path by tail call.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::bpf_ktime_get_coarse_ns,
    programs::TcContext,
};
use microseg_common::{session_flags as sf, *};

use crate::{
    events::emit,
    maps::*,
    parse::{self, Packet, Parsed, FRAG_FIRST, FRAG_LATER},
    session::{advance, session_key, starts_over},
};

pub const PASS: i32 = TC_ACT_OK as i32;
pub const DROP: i32 = TC_ACT_SHOT as i32;

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
    if pkt.fragment == FRAG_LATER {
        let verdict = later_fragment(ifindex, &pkt, stats);
        return finish(stats, verdict);
    }

    let (key, src_is_lo) = session_key(ifindex, &pkt);
    let mut stale = false;
    if let Some(s) = MSEG_SESSIONS.get_ptr_mut(&key) {
        let s = unsafe { &mut *s };
        // A SYN on a closed session's ports is a new connection: judged as new.
        if !starts_over(s, &pkt) {
            if s.generation == cfg.generation {
                stats.session_hits += 1;
                // The coarse clock (one tick) is plenty for idle timeouts and costs a seventh.
                let now = unsafe { bpf_ktime_get_coarse_ns() };
                let (verdict, rule_id) = established(stats, &key, s, &pkt, src_is_lo, now, len);
                record_first_fragment(ifindex, &pkt, verdict, rule_id, stats);
                return finish(stats, verdict);
            }
            stale = true;
        }
    }

    let Some(handoff) = MSEG_HANDOFF.get_ptr_mut(0) else {
        return finish(stats, verdict::DENY);
    };
    unsafe {
        (*handoff).pkt = pkt;
        (*handoff).len = len;
        (*handoff).ifindex = ifindex;
        (*handoff).direction = direction;
        (*handoff).stale_session = stale;
        let _ = MSEG_JUMP.tail_call(ctx, SLOW_PATH);
    }
    // Only reached when the slow path is not installed: fail closed.
    finish(stats, verdict::DENY)
}

/// Counts the verdict and turns it into a TC action.
#[inline(always)]
pub fn finish(stats: &mut Stats, verdict: u8) -> i32 {
    // Masked index into a power-of-two array: bounded for the verifier, no panic branch.
    stats.verdicts[(verdict & 7) as usize] += 1;
    if verdict == verdict::DENY {
        DROP
    } else {
        PASS
    }
}

#[inline(always)]
fn fragment_key(ifindex: u32, pkt: &Packet) -> FragmentKey {
    FragmentKey {
        ifindex,
        src: pkt.src,
        dst: pkt.dst,
        id: pkt.frag_id,
        protocol: pkt.frag_proto,
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

/// A first fragment leaves its verdict for the fragments that follow it.
#[inline(always)]
pub fn record_first_fragment(
    ifindex: u32,
    pkt: &Packet,
    verdict: u8,
    rule_id: u32,
    stats: &mut Stats,
) {
    if pkt.fragment != FRAG_FIRST {
        return;
    }
    stats.fragments += 1;
    let entry = FragmentEntry {
        verdict,
        _pad: [0; 3],
        rule_id,
    };
    let _ = MSEG_FRAGMENTS.insert(&fragment_key(ifindex, pkt), &entry, 0);
}

/// A packet of a session whose verdict is current; returns (verdict, rule id).
#[inline(always)]
pub fn established(
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
    let closed = advance(s, pkt, is_orig);
    count_rule(s.rule_id, len);
    let v = s.verdict;
    if v != verdict::ALLOW && now.wrapping_sub(s.last_event_ns) >= EVENT_INTERVAL_NS {
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

/// An event about a whole session, in its originator's direction.
#[inline(always)]
pub fn session_event(kind: u8, key: &SessionKey, s: &Session, now: u64, stats: &mut Stats) {
    emit(stats, |e| e.fill_from_session(kind, key, s, now));
}

#[inline(always)]
pub fn count_rule(rule_id: u32, len: u64) {
    if rule_id == RULE_NONE {
        return;
    }
    if let Some(c) = MSEG_RULE_COUNTERS.get_ptr_mut(rule_id) {
        let c = unsafe { &mut *c };
        c.packets += 1;
        c.bytes += len;
    }
}
