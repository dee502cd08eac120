//! The path every packet takes: parse, then one session lookup. A packet of a session
//! judged under the current policy generation ends here; anything else is handed to the
//! slow path by tail call.

use aya_ebpf::{helpers::bpf_ktime_get_coarse_ns, programs::TcContext};
use microseg_common::*;

use crate::{
    maps::*,
    parse::{self, Packet, Parsed, FRAG_LATER},
    session::{session_key, starts_over},
    shared::{established, finish, fragment_key, is_orig, record_first_fragment, DROP, PASS},
};

#[inline(always)]
pub fn handle(ctx: &TcContext, direction: u8) -> i32 {
    let Some(cfg) = MSEG_CONFIG.get(0) else {
        return DROP;
    };
    let Some(stats) = MSEG_STATS.get_ptr_mut(0) else {
        return DROP;
    };
    // SAFETY: this CPU's copy of the counters, valid until the program returns; no other
    // program runs on this CPU meanwhile, so nothing else writes it.
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
    // SAFETY: the context's skb is the kernel's, valid for the whole run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    if pkt.fragment == FRAG_LATER {
        let verdict = later_fragment(ifindex, &pkt, stats);
        return finish(stats, verdict);
    }

    let (key, src_is_lo) = session_key(&pkt);
    let mut has_session = false;
    // An ICMP error follows the connection it quotes, which the slow path checks; a
    // session under its own addresses would pass or drop it before that check. A denied
    // tuple's entry is looked for only when the session table has none: an established
    // allowed connection's packet takes one lookup.
    let (found, denied) = if parse::is_icmp_error(&pkt) {
        (None, false)
    } else {
        match MSEG_SESSIONS.get_ptr_mut(&key) {
            Some(s) => (Some(s), false),
            None => {
                let d = MSEG_DENIED.get_ptr_mut(&key);
                (d, d.is_some())
            }
        }
    };
    if let Some(s) = found {
        // SAFETY: a map value stays valid until the program returns. Another CPU may
        // update the same session meanwhile; that races counters and state only, as any
        // per-connection table shared by CPUs does.
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
                // SAFETY: a helper without arguments or preconditions.
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
    // SAFETY: the handoff slot is this CPU's, valid for the run, and read by the slow path
    // on this CPU right after; a tail call does not return, and nothing here needs a drop.
    unsafe {
        (*handoff).pkt = pkt;
        (*handoff).len = len;
        (*handoff).ifindex = ifindex;
        (*handoff).direction = direction;
        (*handoff).has_session = has_session;
        (*handoff).denied = denied;
        let _ = MSEG_JUMP.tail_call(ctx, SLOW_PATH);
    }
    // Only reached when the slow path is not installed: fail closed.
    finish(stats, verdict::DENY)
}

/// Later fragments carry no ports: they follow their first fragment, or are dropped.
#[inline(always)]
fn later_fragment(ifindex: u32, pkt: &Packet, stats: &mut Stats) -> u8 {
    stats.fragments += 1;
    // SAFETY: the verdict is copied out at once. An LRU element another CPU evicts and
    // reuses meanwhile could yield another datagram's verdict, never an out-of-bounds read.
    match unsafe { MSEG_FRAGMENTS.get(&fragment_key(ifindex, pkt)) } {
        Some(e) => e.verdict,
        None => {
            stats.fragments_dropped += 1;
            verdict::DENY
        }
    }
}
