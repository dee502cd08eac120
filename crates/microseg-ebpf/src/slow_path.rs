//! Packets without a current session: judge them by policy and open (or refresh) their
//! session. Reached by tail call from the fast path, which already parsed and counted.

use aya_ebpf::{bindings, helpers::bpf_ktime_get_coarse_ns, programs::TcContext};
use microseg_common::{session_flags as sf, *};

use crate::{
    maps::*,
    parse::{self, Packet},
    policy::{identity_of, judge, Judgement, Query},
    session::{initial_state, learn, session_key, starts_over},
    shared::{
        count_rule, end_session, established, finish, is_orig, record_first_fragment,
        session_event, DROP,
    },
};

#[inline(always)]
pub fn handle(ctx: &TcContext) -> i32 {
    let Some(cfg) = MSEG_CONFIG.get(0) else {
        return DROP;
    };
    let Some(stats) = MSEG_STATS.get_ptr_mut(0) else {
        return DROP;
    };
    // SAFETY: this CPU's copy of the counters, valid until the program returns; no other
    // program runs on this CPU meanwhile, so nothing else writes it.
    let stats = unsafe { &mut *stats };
    let Some(h) = MSEG_HANDOFF.get_ptr(0) else {
        return finish(stats, verdict::DENY);
    };
    // SAFETY: this CPU's handoff slot, valid for the run. Only its `new_session` is written
    // meanwhile (`new_session`), never the fields read here. The packet is read in place:
    // a copy on the stack takes the program past the 512-byte stack.
    let (pkt, h) = unsafe { (&(*h).pkt, &*h) };
    let (len, ifindex, direction) = (h.len, h.ifindex, h.direction & 1);
    // Read once, together: a policy flip between two reads would stamp a judgement of the
    // old slot with the new generation, and it would never be judged again.
    let policy = cfg.policy_version();
    // SAFETY: a helper without arguments or preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let (key, src_is_lo) = session_key(pkt);

    let mut existing = if h.has_session {
        // A denied tuple's entry is followed in the session table, where it moves for this
        // run and leaves again at its end unless one of its legs now lets packets through
        // (`settle_denied`). A pointer into either of two maps would have the verifier walk
        // everything after it twice, past its limit.
        if h.denied {
            move_in_denied(&key);
        }
        // SAFETY: a map value stays valid until the program returns; another CPU updating
        // the same session races counters and state only.
        MSEG_SESSIONS.get_ptr_mut(&key).map(|s| unsafe { &mut *s })
    } else {
        None
    };
    let moved_in = existing.as_deref_mut().map(|s| s as *mut Session);
    let leg_here = |s: &Session| leg_of(direction, is_orig(s, src_is_lo));
    // Every leg judged under an older policy is judged again first (not one another
    // interface is about to take over): the first program moves the session's state on
    // both legs' current verdicts. One leg per run: a second copy of the policy lookups
    // would not fit on the stack, so the program runs again for the other.
    if let Some(s) = existing.as_mut() {
        let here = leg_here(s);
        let stale = |leg: usize| {
            let l = &s.legs[leg];
            let taken_over = leg == here && l.ifindex != ifindex;
            l.is_present() && !taken_over && l.generation != policy.generation
        };
        let (first, second) = (stale(0), stale(1));
        if first || second {
            let leg = if first { 0 } else { 1 };
            rejudge(cfg, policy, stats, &key, s, leg, now);
            if first && second {
                // SAFETY: the program array holds this program; the handoff slot is intact.
                let _ = unsafe { MSEG_JUMP.tail_call(ctx, SLOW_PATH) };
                // Only reached when the tail call failed: the leg left stale denies until it
                // is judged again (its generation still says so), never the old verdict.
                s.legs[1].verdict = verdict::DENY;
            }
        }
    }
    let (verdict, rule_id) = match existing {
        // This interface's leg, present: the session had a stale leg, now judged again.
        Some(s) if s.legs[leg_here(s)].ifindex == ifindex => {
            stats.session_hits += 1;
            let is_orig = is_orig(s, src_is_lo);
            let leg = leg_of(direction, is_orig);
            established(stats, &key, s, leg, direction, is_orig, pkt, now, len)
        }
        // No session, or none of its legs is on this interface yet: policy decides.
        existing => judge_by_policy(
            ctx, cfg, policy, stats, pkt, &key, src_is_lo, ifindex, direction, now, len, existing,
        ),
    };
    if let Some(s) = moved_in {
        if h.denied {
            // SAFETY: the session table's element found above, valid until the program
            // returns.
            settle_denied(&key, unsafe { &*s });
        }
    }
    record_first_fragment(ifindex, pkt, verdict, rule_id, stats);
    finish(stats, verdict)
}

/// Moves a denied tuple's entry into the session table for this run. The element the
/// insert takes is the one `settle_denied` frees, so the move evicts nothing in the steady
/// state (docs/SECURITY.md, "Floods of new tuples").
#[inline(always)]
fn move_in_denied(key: &SessionKey) {
    // SAFETY: the entry is copied by the helper at once.
    if let Some(d) = unsafe { MSEG_DENIED.get(key) } {
        let _ = MSEG_SESSIONS.insert(key, d, 0);
        let _ = MSEG_DENIED.remove(key);
    }
}

/// A denied tuple's entry moved in for this run goes back to `MSEG_DENIED` unless one of
/// its legs now lets packets through (judged again after a policy change, or a new leg on
/// another interface): only tuples every present leg denies stay apart.
#[inline(always)]
fn settle_denied(key: &SessionKey, s: &Session) {
    let passes = |l: &SessionLeg| l.is_present() && l.verdict != verdict::DENY;
    if passes(&s.legs[0]) || passes(&s.legs[1]) {
        return;
    }
    let _ = MSEG_DENIED.insert(key, s, 0);
    let _ = MSEG_SESSIONS.remove(key);
}

/// A packet no current leg on this interface judged: policy decides, and its judgement
/// opens the session, or adds this interface's leg to it.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn judge_by_policy(
    ctx: &TcContext,
    cfg: &Config,
    policy: PolicyVersion,
    stats: &mut Stats,
    pkt: &Packet,
    key: &SessionKey,
    src_is_lo: bool,
    ifindex: u32,
    direction: u8,
    now: u64,
    len: u64,
    existing: Option<&mut Session>,
) -> (u8, u32) {
    let j = match decide(
        ctx, policy, stats, ifindex, pkt, direction, key, src_is_lo, &existing,
    ) {
        Decision::Untracked(v) => return (v, RULE_NONE),
        Decision::Judged(j) => j,
    };
    // Built only now: alive across `decide`'s lookups, it takes the program past the
    // 512-byte stack.
    let seen = Seen {
        key,
        src_is_lo,
        ifindex,
        direction,
        now,
        len,
    };
    match existing {
        Some(s) => {
            stats.session_hits += 1;
            add_leg(cfg, policy, stats, s, &seen, pkt, &j)
        }
        None => {
            stats.session_misses += 1;
            open_session(cfg, policy, stats, &seen, pkt, &j)
        }
    }
}

/// What policy makes of a packet no current leg judged.
enum Decision {
    /// Decided without opening a leg (and without an event): related ICMP errors, spoofed
    /// sources, interfaces without a workload.
    Untracked(u8),
    /// Judged by the workload's policy.
    Judged(Judgement),
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn decide(
    ctx: &TcContext,
    policy: PolicyVersion,
    stats: &mut Stats,
    ifindex: u32,
    pkt: &Packet,
    direction: u8,
    key: &SessionKey,
    src_is_lo: bool,
    existing: &Option<&mut Session>,
) -> Decision {
    let slot = policy.slot;
    let ep_key = EndpointKey { slot, ifindex };
    // SAFETY: a map without preallocation frees a removed element only after every
    // program that could see it has returned, so the reference stays valid.
    let Some(ep) = (unsafe { MSEG_ENDPOINTS.get(&ep_key) }) else {
        // An interface with no endpoint in this slot has no policy: open.
        return Decision::Untracked(verdict::ALLOW);
    };
    // Before any exemption: no workload sends from another's address, errors included.
    if direction == direction::EGRESS && spoofed(slot, ifindex, ep, pkt) {
        stats.spoofed += 1;
        return Decision::Untracked(verdict::DENY);
    }
    let is_error = parse::is_icmp_error(pkt);
    if is_error && icmp_error_related(ctx, ifindex, policy.generation, pkt) {
        stats.icmp_related += 1;
        return Decision::Untracked(verdict::ALLOW);
    }
    // A leg judges its own direction of the connection, whichever way the packet that
    // opens it goes: a reply reaching an interface first must not have the replier's
    // egress policy decide what its ingress policy would refuse.
    let q = match existing {
        Some(s) => {
            let leg = leg_of(direction, is_orig(s, src_is_lo));
            leg_query(slot, key, s, leg)
        }
        None => Query {
            slot,
            direction,
            peer_identity: identity_of(
                slot,
                if direction == direction::EGRESS {
                    &pkt.dst
                } else {
                    &pkt.src
                },
            ),
            protocol: pkt.protocol,
            sport: pkt.sport,
            dport: pkt.dport,
            has_ports: proto::has_ports(pkt.protocol),
        },
    };
    let j = judge(ep, &q);
    if is_error {
        // Judged like any ICMP, but it opens no session (one would decide the router's
        // later errors before their relation is checked) and sends no event (with no
        // session to rate-limit them, a flood of errors would flood the ring).
        return Decision::Untracked(j.verdict);
    }
    Decision::Judged(j)
}

/// The policy question for a session's `leg`: the connection as its originator opened it,
/// in the direction the leg judges (legs are indexed by that direction).
#[inline(always)]
fn leg_query(slot: u32, key: &SessionKey, s: &Session, leg: usize) -> Query {
    let direction = (leg & 1) as u8;
    let (src, sport, dst, dport) = key.orig_tuple(s);
    let peer = if direction == direction::EGRESS {
        &dst
    } else {
        &src
    };
    Query {
        slot,
        direction,
        peer_identity: identity_of(slot, peer),
        protocol: key.protocol,
        sport,
        dport,
        has_ports: proto::has_ports(key.protocol),
    }
}

#[inline(always)]
fn new_leg(j: &Judgement, ifindex: u32, generation: u32) -> SessionLeg {
    SessionLeg {
        ifindex,
        generation,
        rule_id: j.rule_id,
        audit_rule_id: j.audit_rule_id,
        peer_identity: j.peer_identity,
        verdict: j.verdict,
        audit_verdict: j.audit_verdict,
        flags: 0,
        _pad: 0,
    }
}

/// Whether a session's new or judged-again `leg` sends its NEW event: every verdict but
/// `allow` is reported at once; an allowed connection is reported when it ends (and by the
/// agent's walk of the session table), at its start only under `REPORT_START`.
///
/// Both read from map memory, afresh: a register the verifier knows more of after this
/// branch would keep it from merging the two paths after it, and the slow path would
/// double past the verifier's limit of a million instructions.
#[inline(always)]
fn reports_start(cfg: &Config, leg: &SessionLeg) -> bool {
    // SAFETY: both point into map values, valid for the run.
    let (flags, verdict) = unsafe {
        (
            core::ptr::read_volatile(&cfg.flags),
            core::ptr::read_volatile(&leg.verdict),
        )
    };
    verdict != verdict::ALLOW || flags & config_flags::REPORT_START != 0
}

/// Where and when a packet that policy judged was seen.
struct Seen<'a> {
    key: &'a SessionKey,
    src_is_lo: bool,
    ifindex: u32,
    direction: u8,
    now: u64,
    len: u64,
}

/// The first packet of a connection, judged: open its session.
#[inline(always)]
fn open_session(
    cfg: &Config,
    policy: PolicyVersion,
    stats: &mut Stats,
    seen: &Seen,
    pkt: &Packet,
    j: &Judgement,
) -> (u8, u32) {
    let insert = cfg.flags & config_flags::NO_SESSION_INSERT == 0;
    // As `reports_start` decides, from the judgement: nothing but returns follows.
    let report = j.verdict != verdict::ALLOW || cfg.flags & config_flags::REPORT_START != 0;
    if insert || report {
        if let Some(s) = new_session(policy, seen, pkt, j) {
            let opened = !insert || insert_new(seen.key, s, pkt, j.verdict == verdict::DENY, stats);
            // From the session as built, whether or not it was written; by one CPU only.
            if report && opened {
                let leg = leg_of(seen.direction, true);
                session_event(event_kind::NEW, seen.key, s, leg, seen.now, stats);
            }
        }
    }
    count_rule(j.rule_id, seen.len);
    (j.verdict, j.rule_id)
}

/// A new session goes to the session table, unless its one leg denies: then to
/// `MSEG_DENIED`, where a flood of denied tuples evicts only its own kind
/// (docs/SECURITY.md, "Floods of new tuples"). Returns whether this run opened it: when a
/// tuple's first packets are judged at once on two CPUs, both find no session, and only
/// the one whose insert lands reports a new connection.
#[inline(always)]
fn insert_new(
    key: &SessionKey,
    s: &Session,
    pkt: &Packet,
    denied: bool,
    stats: &mut Stats,
) -> bool {
    // A closed denied entry of these ports, which a SYN starts over.
    let over_denied = MSEG_HANDOFF.get(0).is_some_and(|h| h.denied);
    if denied {
        let flags = if over_denied { BPF_ANY } else { BPF_NOEXIST };
        return MSEG_DENIED.insert(key, s, flags).is_ok();
    }
    let opened = MSEG_SESSIONS.insert(key, s, BPF_NOEXIST).is_ok() || {
        // SAFETY: read at once; the entry stays valid until the program returns.
        let closed = unsafe { MSEG_SESSIONS.get(key) }.is_some_and(|old| starts_over(old, pkt));
        closed && MSEG_SESSIONS.insert(key, s, BPF_ANY).is_ok()
    };
    if opened {
        stats.sessions_created += 1;
    }
    // Left there, the closed denied entry would judge the tuple again once this session
    // leaves the table.
    if over_denied {
        let _ = MSEG_DENIED.remove(key);
    }
    opened
}

/// Map update flags: write whether or not the key is there, or only if it is not.
const BPF_ANY: u64 = bindings::BPF_ANY as u64;
const BPF_NOEXIST: u64 = bindings::BPF_NOEXIST as u64;

/// Builds a new session whose only leg is the one that judged `pkt`, in this CPU's
/// scratch slot (a session does not fit on the stack).
#[inline(always)]
fn new_session(
    policy: PolicyVersion,
    seen: &Seen,
    pkt: &Packet,
    j: &Judgement,
) -> Option<&'static mut Session> {
    let h = MSEG_HANDOFF.get_ptr_mut(0)?;
    // SAFETY: the handoff slot is this CPU's, valid for the run, and no other program
    // runs on this CPU meanwhile.
    let s = unsafe { &mut (*h).new_session };
    // The first packet seen is the originator's: its leg judges this direction.
    let leg = leg_of(seen.direction, true);
    s.created_ns = seen.now;
    s.last_seen_ns = seen.now;
    s.packets = [1, 0];
    s.bytes = [seen.len, 0];
    s.state = initial_state(pkt);
    s.flags = if seen.src_is_lo { sf::ORIG_IS_LO } else { 0 };
    s.last_event = [event_tick(seen.now); 2];
    s.seq_end = [0; 2];
    s.max_win = [0; 2];
    s.win_scale = [0; 2];
    if pkt.protocol == proto::TCP {
        learn(s, pkt, 0);
    }
    s.legs[leg ^ 1] = SessionLeg::default();
    s.legs[leg] = new_leg(j, seen.ifindex, policy.generation);
    Some(s)
}

/// A connection's first packet on this interface, judged (its peer is a local workload,
/// whose leg opened the session, or the leg was on another interface): add this
/// interface's leg, then follow the session.
#[inline(always)]
fn add_leg(
    cfg: &Config,
    policy: PolicyVersion,
    stats: &mut Stats,
    s: &mut Session,
    seen: &Seen,
    pkt: &Packet,
    j: &Judgement,
) -> (u8, u32) {
    let is_orig = is_orig(s, seen.src_is_lo);
    let leg = leg_of(seen.direction, is_orig);
    // A leg on another interface (its workload's interface made again under a new
    // ifindex) is taken over: the session as it was ends here (one END with both legs),
    // before the new leg's flow starts.
    if s.legs[leg].is_present() && !s.legs[leg].has_ended() {
        end_session(seen.key, s, seen.now, stats);
    }
    s.legs[leg] = new_leg(j, seen.ifindex, policy.generation);
    s.last_event[leg & 1] = event_tick(seen.now);
    if reports_start(cfg, &s.legs[leg]) {
        session_event(event_kind::NEW, seen.key, s, leg, seen.now, stats);
    }
    established(
        stats,
        seen.key,
        s,
        leg,
        seen.direction,
        is_orig,
        pkt,
        seen.now,
        seen.len,
    )
}

/// The policy changed since this leg was judged: judge the session again, as the leg's
/// workload sees it.
#[inline(always)]
fn rejudge(
    cfg: &Config,
    policy: PolicyVersion,
    stats: &mut Stats,
    key: &SessionKey,
    s: &mut Session,
    leg: usize,
    now: u64,
) {
    stats.rejudged += 1;
    let leg = leg & 1;
    let ep_key = EndpointKey {
        slot: policy.slot,
        ifindex: s.legs[leg].ifindex,
    };
    // SAFETY: a map without preallocation frees a removed element only after every
    // program that could see it has returned, so the reference stays valid.
    let j = match unsafe { MSEG_ENDPOINTS.get(&ep_key) } {
        Some(ep) => judge(ep, &leg_query(policy.slot, key, s, leg)),
        None => Judgement {
            verdict: verdict::ALLOW,
            peer_identity: s.legs[leg].peer_identity,
            ..Default::default()
        },
    };
    let l = &mut s.legs[leg];
    l.generation = policy.generation;
    let changed = j.verdict != l.verdict || j.rule_id != l.rule_id;
    l.verdict = j.verdict;
    l.rule_id = j.rule_id;
    l.audit_verdict = j.audit_verdict;
    l.audit_rule_id = j.audit_rule_id;
    l.peer_identity = j.peer_identity;
    if changed {
        s.last_event[leg & 1] = event_tick(now);
        if reports_start(cfg, &s.legs[leg]) {
            session_event(event_kind::NEW, key, s, leg, now, stats);
        }
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
    // SAFETY: only the entry's presence is used, not its value.
    unsafe { MSEG_ENDPOINT_ADDRS.get(&key) }.is_none()
}

/// An ICMP error about a session this interface allowed under the current policy passes
/// with it. A leg the policy changed under is not trusted until a packet of its own
/// connection judges it again: a revoked peer must not keep talking in errors.
#[inline(always)]
fn icmp_error_related(ctx: &TcContext, ifindex: u32, generation: u32, pkt: &Packet) -> bool {
    let mut inner = Packet::default();
    if !parse::parse_icmp_inner(ctx, pkt, &mut inner) {
        return false;
    }
    // An error goes back to whoever sent the packet it quotes; anything else is not an
    // error about that connection, whatever it quotes.
    if inner.src != pkt.dst {
        return false;
    }
    let (key, _) = session_key(&inner);
    // SAFETY: the fields are read at once. An LRU element another CPU evicts and reuses
    // meanwhile could yield another session's leg, never an out-of-bounds read.
    match unsafe { MSEG_SESSIONS.get(&key) } {
        Some(s) => {
            let allowed_on = |l: &SessionLeg| {
                l.ifindex == ifindex && l.generation == generation && l.verdict != verdict::DENY
            };
            allowed_on(&s.legs[0]) || allowed_on(&s.legs[1])
        }
        None => false,
    }
}
