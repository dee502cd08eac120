//! Session keys and the TCP state machine.

use microseg_common::{session_flags as sf, session_state as st, *};

use crate::parse::{tcp_flags as tf, Packet};

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

/// Advances the state with one packet.
#[inline(always)]
pub fn advance(s: &mut Session, pkt: &Packet, is_orig: bool) {
    if pkt.protocol != proto::TCP {
        if !is_orig && s.state == st::NEW {
            s.state = st::ESTABLISHED;
        }
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

/// Whether `pkt` is a closed connection's last packet: the ACK of the second FIN, sent by
/// the side that closed first, or a RST `from_local` (sent by a workload of this node). A
/// RST from outside may be forged (sequence numbers are not checked here): it closes the
/// session but leaves it in the table, so that the connection's replies are not judged as
/// new. Anything after the last packet (a retransmission) is judged afresh.
#[inline(always)]
pub fn is_last_packet(s: &Session, pkt: &Packet, is_orig: bool, from_local: bool) -> bool {
    if pkt.protocol != proto::TCP || s.state != st::CLOSED {
        return false;
    }
    let f = pkt.tcp_flags;
    if f & tf::RST != 0 {
        return from_local;
    }
    let closed_by_reply = s.flags & sf::CLOSED_BY_REPLY != 0;
    f & (tf::SYN | tf::FIN | tf::ACK) == tf::ACK && is_orig == closed_by_reply
}
