//! Session keys and the TCP state machine.

use microseg_common::{session_flags as sf, session_state as st, *};

use crate::parse::{tcp_flags as tf, Packet, NO_WINDOW_SCALE};

/// The key both directions of a connection share, and whether `pkt`'s source is its lo side.
#[inline(always)]
pub fn session_key(pkt: &Packet) -> (SessionKey, bool) {
    let src_is_lo = endpoint_le(&pkt.src, pkt.sport, &pkt.dst, pkt.dport);
    let (lo, lo_port, hi, hi_port) = if src_is_lo {
        (pkt.src, pkt.sport, pkt.dst, pkt.dport)
    } else {
        (pkt.dst, pkt.dport, pkt.src, pkt.sport)
    };
    let key = SessionKey {
        lo_addr: lo,
        hi_addr: hi,
        lo_port,
        hi_port,
        protocol: pkt.protocol,
        _pad: [0; 3],
    };
    (key, src_is_lo)
}

/// Orders (address, port) pairs; any total order works as long as it is the same everywhere.
#[inline(always)]
fn endpoint_le(a: &[u32; 4], ap: u16, b: &[u32; 4], bp: u16) -> bool {
    for i in 0..4 {
        if a[i] != b[i] {
            return a[i] < b[i];
        }
    }
    ap <= bp
}

/// State of a session whose first packet carries `flags` (TCP) — mid-stream packets are
/// picked up as established, as after an agent restart that lost nothing but the table.
#[inline(always)]
pub fn initial_state(pkt: &Packet) -> u8 {
    if pkt.protocol != proto::TCP {
        return st::NEW;
    }
    let f = pkt.tcp_flags;
    if f & tf::RST != 0 {
        st::CLOSED
    } else if f & tf::FIN != 0 {
        st::CLOSING
    } else if f & (tf::SYN | tf::ACK) == tf::SYN {
        st::SYN_SENT
    } else {
        st::ESTABLISHED
    }
}

/// A SYN on a closed session reuses its ports for a new connection.
#[inline(always)]
pub fn starts_over(s: &Session, pkt: &Packet) -> bool {
    pkt.protocol == proto::TCP
        && s.state == st::CLOSED
        && pkt.tcp_flags & (tf::SYN | tf::ACK) == tf::SYN
}

/// Advances the state with one packet. A TCP segment its receiver would not take (outside
/// the window, docs/SECURITY.md "TCP") changes nothing: a third party that does not see the
/// connection cannot close it, half-close it, or move what the session tracks.
#[inline(always)]
pub fn advance(s: &mut Session, pkt: &Packet, is_orig: bool) {
    if pkt.protocol != proto::TCP {
        if !is_orig && s.state == st::NEW {
            s.state = st::ESTABLISHED;
        }
        return;
    }
    if !accept_segment(s, pkt, side_of(is_orig)) {
        return;
    }
    let f = pkt.tcp_flags;
    if f & tf::RST != 0 {
        s.state = st::CLOSED;
    } else if f & tf::FIN != 0 {
        s.flags |= if is_orig { sf::FIN_ORIG } else { sf::FIN_REPLY };
        // A FIN on a closed session (sent again, or after a RST) changes nothing.
        if s.state != st::CLOSED {
            if s.flags & (sf::FIN_ORIG | sf::FIN_REPLY) == sf::FIN_ORIG | sf::FIN_REPLY {
                s.state = st::CLOSED;
                if !is_orig {
                    s.flags |= sf::CLOSED_BY_REPLY;
                }
            } else {
                s.state = st::CLOSING;
            }
        }
    } else if s.state == st::SYN_SENT && !is_orig && f & (tf::SYN | tf::ACK) == tf::SYN | tf::ACK {
        s.state = st::SYN_RECV;
    } else if s.state == st::SYN_RECV && is_orig && f & tf::ACK != 0 {
        s.state = st::ESTABLISHED;
    }
}

/// Index of a side in [`Session::seq_end`]: 0 the originator, 1 the replier.
#[inline(always)]
fn side_of(is_orig: bool) -> usize {
    (!is_orig) as usize
}

#[inline(always)]
fn seen(s: &Session, side: usize) -> bool {
    s.flags & (sf::SEQ_ORIG << (side & 1)) != 0
}

/// The window scale assumed for a side whose SYN was not seen: Linux's for its default
/// largest receive buffer (6 MiB); windows of larger buffers can exceed it.
const ASSUMED_WIN_SCALE: u32 = 7;
/// RFC 7323's largest shift.
const MAX_WIN_SCALE: u8 = 14;

/// What a side's first segment tells: where its sequence is, its window and, from a SYN,
/// its window scale. A session picked up mid-stream learns each side from the first
/// segment it sees of it, without the scale.
#[inline(always)]
pub fn learn(s: &mut Session, pkt: &Packet, side: usize) {
    let side = side & 1;
    s.seq_end[side] = pkt.seq.wrapping_add(pkt.seg_len);
    s.win_scale[side] = if pkt.tcp_flags & tf::SYN == 0 {
        WIN_SCALE_UNKNOWN
    } else if pkt.wscale != NO_WINDOW_SCALE {
        // RFC 7323: a larger shift is taken as the largest.
        pkt.wscale.min(MAX_WIN_SCALE)
    } else {
        // Scaling needs the option in both SYNs: a SYN-ACK without it turns it off.
        s.win_scale[0] = 0;
        0
    };
    s.max_win[side] = window_in_bytes(s, pkt, side);
    s.flags |= sf::SEQ_ORIG << side;
}

/// The window `pkt` advertises, in bytes: a SYN's is never scaled (RFC 7323).
#[inline(always)]
fn window_in_bytes(s: &Session, pkt: &Packet, side: usize) -> u32 {
    let raw = pkt.win as u32;
    if pkt.tcp_flags & tf::SYN != 0 {
        return raw;
    }
    let scale = match s.win_scale[side & 1] {
        WIN_SCALE_UNKNOWN => ASSUMED_WIN_SCALE,
        known => (known & 15) as u32,
    };
    raw << scale
}

/// How far from what `side` sent its receiver takes a segment: the largest window the
/// receiver advertised; 64 KiB, the largest unscaled one, while it has sent nothing.
#[inline(always)]
fn window_towards(s: &Session, side: usize) -> u32 {
    let receiver = (side ^ 1) & 1;
    if seen(s, receiver) {
        // At most 2^30 (65,535 << 14); at least a byte, so that the bound is a range.
        s.max_win[receiver].clamp(1, 1 << 30)
    } else {
        1 << 16
    }
}

/// Whether `seq` lies within the receiver's window of the end of what `side` sent, on
/// either side of it, modulo 2^32: a RST or FIN there may be one the receiver accepts.
#[inline(always)]
pub fn in_window(s: &Session, side: usize, seq: u32) -> bool {
    let w = window_towards(s, side);
    seen(s, side) && seq.wrapping_sub(s.seq_end[side & 1]).wrapping_add(w) <= 2 * w
}

/// Whether a segment from `side` counts, as conntrack's window check would have it; an
/// accepted one moves the side's end and window forward.
#[inline(always)]
fn accept_segment(s: &mut Session, pkt: &Packet, side: usize) -> bool {
    let side = side & 1;
    if !seen(s, side) {
        // Before the replier's first answer its stack has only the SYN to answer: the
        // originator's takes nothing from it that does not acknowledge the SYN (RFC 793,
        // SYN-SENT), so nothing else may open or reset the session in its name either.
        if s.state == st::SYN_SENT
            && side == 1
            && (pkt.tcp_flags & tf::ACK == 0 || pkt.ack != s.seq_end[0])
        {
            return false;
        }
        learn(s, pkt, side);
        return true;
    }
    if !in_window(s, side, pkt.seq) {
        return false;
    }
    let end = pkt.seq.wrapping_add(pkt.seg_len);
    if end.wrapping_sub(s.seq_end[side]) as i32 > 0 {
        s.seq_end[side] = end;
    }
    let win = window_in_bytes(s, pkt, side);
    if win > s.max_win[side] {
        s.max_win[side] = win;
    }
    true
}

/// Whether `pkt` is a closed connection's last packet: the ACK of the second FIN (it
/// acknowledges exactly that FIN), sent by the side that closed first, or a RST inside the
/// window `from_local` (sent by a workload of this node). A RST from outside may be forged
/// by someone who guessed the window: it closes the session but leaves it in the table, so
/// that the connection's replies are not judged as new. Anything after the last packet (a
/// retransmission) is judged afresh.
#[inline(always)]
pub fn is_last_packet(s: &Session, pkt: &Packet, is_orig: bool, from_local: bool) -> bool {
    if pkt.protocol != proto::TCP || s.state != st::CLOSED {
        return false;
    }
    let f = pkt.tcp_flags;
    if f & tf::RST != 0 {
        return from_local && in_window(s, side_of(is_orig), pkt.seq);
    }
    let closed_by_reply = s.flags & sf::CLOSED_BY_REPLY != 0;
    let both_fins = sf::FIN_ORIG | sf::FIN_REPLY;
    // The side that sent the second FIN: the one the last ACK is about.
    let closer = closed_by_reply as usize;
    f & (tf::SYN | tf::FIN | tf::ACK) == tf::ACK
        && is_orig == closed_by_reply
        && s.flags & both_fins == both_fins
        && pkt.ack == s.seq_end[closer]
}
