//! What the fast and the slow path both do with a packet once its verdict is known:
//! follow its session, count it and its rule, send its events, remember a first fragment's
//! verdict, and turn the verdict into a TC action.

use aya_ebpf::bindings::{TC_ACT_OK, TC_ACT_SHOT};
use microseg_common::{session_flags as sf, *};

use crate::{
    events::emit,
    maps::{MSEG_FRAGMENTS, MSEG_RULE_COUNTERS, MSEG_SESSIONS},
    parse::{Packet, FRAG_FIRST},
    session::{advance, is_last_packet},
};

pub const PASS: i32 = TC_ACT_OK as i32;
pub const DROP: i32 = TC_ACT_SHOT as i32;

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
pub fn fragment_key(ifindex: u32, pkt: &Packet) -> FragmentKey {
    FragmentKey {
        ifindex,
        src: pkt.src,
        dst: pkt.dst,
        id: pkt.frag_id,
        protocol: pkt.frag_proto,
        _pad: [0; 3],
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
        // The connection ends in the first program that sees it closed: a leg's own
        // program may see no packet of it again.
        end_session(key, s, now, stats);
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

/// Marks every present leg ended and sends the session's one END event (both legs in it),
/// unless every present leg's end was already sent. The event is about the egress leg when
/// there is one: the originator's side.
#[inline(always)]
pub fn end_session(key: &SessionKey, s: &mut Session, now: u64, stats: &mut Stats) {
    let unended = |l: &SessionLeg| l.is_present() && !l.has_ended();
    if !unended(&s.legs[0]) && !unended(&s.legs[1]) {
        return;
    }
    for l in s.legs.iter_mut() {
        if l.is_present() {
            l.flags |= leg_flags::ENDED;
        }
    }
    let about = if s.legs[direction::EGRESS as usize].is_present() {
        direction::EGRESS
    } else {
        direction::INGRESS
    };
    session_event(event_kind::END, key, s, about as usize, now, stats);
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
        // SAFETY: this CPU's copy of the rule's counters, valid until the program returns.
        let c = unsafe { &mut *c };
        c.packets += 1;
        c.bytes += len;
    }
}
