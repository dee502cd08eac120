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
    session::{advance, is_last_packet, session_key, starts_over},
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
    let parsed = parse::parse(ctx, &mut pkt);
    // Every tagged frame counts, whatever comes of it. Without a branch: one here lets the
    // compiler duplicate the paths after it for each value (+40% instructions).
    stats.vlan += pkt.vlan as u64;
    match parsed {
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
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    if pkt.fragment == FRAG_LATER {
        let verdict = later_fragment(ifindex, &pkt, stats);
        return finish(stats, verdict);
    }

    let (key, src_is_lo) = session_key(&pkt);
    let mut has_session = false;
    // An ICMP error follows the connection it quotes, which the slow path checks; a
    // session under its own addresses would pass or drop it before that check.
    let found = if parse::is_icmp_error(&pkt) {
        None
    } else {
        MSEG_SESSIONS.get_ptr_mut(&key)
    };
    if let Some(s) = found {
        let s = unsafe { &mut *s };
        // A SYN on a closed session's ports is a new connection: judged as new.
        if !starts_over(s, &pkt) {
            let is_orig = is_orig(s, src_is_lo);
            let leg = leg_of(direction, is_orig);
            let (l, other) = (&s.legs[leg], &s.legs[leg ^ 1]);
            // Both legs current: the first program moves the state on the other's verdict.
            if l.ifindex == ifindex
                && l.generation == cfg.generation
                && (!other.is_present() || other.generation == cfg.generation)
            {
                stats.session_hits += 1;
                // The coarse clock (one tick) is plenty for idle timeouts and costs a seventh.
                let now = unsafe { bpf_ktime_get_coarse_ns() };
                let (verdict, rule_id) =
                    established(stats, &key, s, leg, direction, is_orig, &pkt, now, len);
                record_first_fragment(ifindex, &pkt, verdict, rule_id, stats);
                return finish(stats, verdict);
            }
            // Judged under an older policy, or not yet on this interface.
            has_session = true;
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
        (*handoff).has_session = has_session;
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
    // Only a verdict that lets the packet through does: anything else, even a value no
    // verdict has, drops it.
    match verdict {
        verdict::ALLOW | verdict::LOG | verdict::AUDIT => PASS,
        _ => DROP,
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

/// Whether `src_is_lo` names the session's originator.
#[inline(always)]
pub fn is_orig(s: &Session, src_is_lo: bool) -> bool {
    (s.flags & sf::ORIG_IS_LO != 0) == src_is_lo
}

/// A packet of a session whose `leg` (on this interface) is current; returns (verdict,
/// rule id).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn established(
    stats: &mut Stats,
    key: &SessionKey,
    s: &mut Session,
    leg: usize,
    direction: u8,
    is_orig: bool,
    pkt: &Packet,
    now: u64,
    len: u64,
) -> (u8, u32) {
    let leg = leg & 1;
    let other_leg_here = s.legs[leg ^ 1].is_present();
    let (v, rule_id) = (s.legs[leg].verdict, s.legs[leg].rule_id);
    // Counted and tracked once, by the first program on this node the packet passes: the
    // sender's own interface, unless the sender has no leg here (a remote peer). Only that
    // program knows the packet came through the sender's interface: one the last program
    // sees alone may be forged from outside in a local workload's name.
    if direction == direction::EGRESS || !other_leg_here {
        let side = if is_orig { 0 } else { 1 };
        s.packets[side] += 1;
        s.bytes[side] += len;
        s.last_seen_ns = now;
        // Both legs are current here (the fast path takes no packet with a stale one; the
        // slow path judges it again first). A packet either drops moves nothing: a dropped
        // RST or FIN must not close (and so remove) a session its endpoints still hold, or
        // the next packet would be judged afresh, as a connection the other way.
        if v != verdict::DENY && (!other_leg_here || s.legs[leg ^ 1].verdict != verdict::DENY) {
            advance(s, pkt, is_orig);
        }
    }
    count_rule(rule_id, len);
    if v != verdict::ALLOW && s.event_due(leg, now) {
        s.last_event[leg] = event_tick(now);
        let kind = if v == verdict::LOG {
            event_kind::LOG
        } else {
            event_kind::DENY
        };
        session_event(kind, key, s, leg, now, stats);
    }
    if s.state == session_state::CLOSED {
        // Every present leg's flow ends in the first program that sees the connection
        // closed: a leg's own program may see no packet of it again.
        for l in 0..2 {
            if s.legs[l].is_present() && !s.legs[l].has_ended() {
                s.legs[l].flags |= leg_flags::ENDED;
                session_event(event_kind::END, key, s, l, now, stats);
            }
        }
        // A closed connection leaves the table with its last packet, at the last program
        // on this node that packet passes: its entry is reused while still in cache,
        // instead of the next connection taking a cold one.
        let last_program = direction == direction::INGRESS || !other_leg_here;
        let from_local = direction == direction::EGRESS || other_leg_here;
        if last_program && v != verdict::DENY && is_last_packet(s, pkt, is_orig, from_local) {
            let _ = MSEG_SESSIONS.remove(key);
            stats.sessions_closed += 1;
        }
    }
    (v, rule_id)
}

/// An event about a whole session as `leg` judged it, in its originator's direction.
#[inline(always)]
pub fn session_event(
    kind: u8,
    key: &SessionKey,
    s: &Session,
    leg: usize,
    now: u64,
    stats: &mut Stats,
) {
    emit(stats, |e| e.fill_from_session(kind, key, s, leg, now));
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
