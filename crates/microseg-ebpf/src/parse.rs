//! Packet parsing: Ethernet with one 802.1Q or 802.1ad tag (in the frame or in the skb),
//! IPv4 with options, IPv6 with its extension-header chain, then TCP, UDP, SCTP, ICMP and
//! ICMPv6.
//!
//! Anything that cannot be parsed is `Malformed`: the caller drops and counts it, so no
//! packet escapes a verdict by being odd.

use aya_ebpf::programs::TcContext;
use microseg_common::proto;

pub const FRAG_NONE: u8 = 0;
pub const FRAG_FIRST: u8 = 1;
pub const FRAG_LATER: u8 = 2;

/// IPv6 extension headers followed before giving up (and dropping).
const MAX_EXT_HEADERS: usize = 8;
/// Beyond this, headers are read with a helper call instead of direct packet access.
const MAX_DIRECT_OFFSET: usize = 256;

/// TCP options looked at before giving up on finding the window scale: real stacks put
/// it among the first six.
const MAX_TCP_OPTIONS: usize = 12;
/// [`Packet::wscale`] of a segment without the option (or not a SYN).
pub const NO_WINDOW_SCALE: u8 = 0xff;

/// The second-to-last word of an IPv4-mapped IPv6 address (`::ffff:0:0/96`).
pub const V4_MAPPED_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

pub enum Parsed {
    Ip,
    Arp,
    NeighborDiscovery,
    NonIp,
    Malformed,
}

/// What the data plane needs of an IP packet. Addresses are IPv4-mapped for IPv4.
#[derive(Clone, Copy, Default)]
pub struct Packet {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    /// Host byte order. For ICMP echo the identifier stands in: source port of a request,
    /// destination port of a reply, so that a reply is the request's reverse ([`echo_id`]);
    /// any other ICMP message has `0x8000 | type` as its source port.
    pub sport: u16,
    pub dport: u16,
    pub protocol: u8,
    pub tcp_flags: u8,
    /// TCP: sequence and acknowledgement numbers, the raw (unscaled) window, and the
    /// sequence space the segment takes (payload, plus one each for SYN and FIN).
    pub seq: u32,
    pub ack: u32,
    pub seg_len: u32,
    pub win: u16,
    /// TCP SYN: the window scale option's shift (RFC 7323), or [`NO_WINDOW_SCALE`].
    pub wscale: u8,
    pub icmp_type: u8,
    pub fragment: u8,
    pub frag_id: u32,
    /// The protocol fragments are matched under: the IPv6 fragment header's next header
    /// (the same in every fragment), or the IPv4 protocol.
    pub frag_proto: u8,
    /// Offset of the L4 header (for ICMP errors: of the ICMP header).
    pub l4_off: u32,
    pub is_v6: bool,
    pub vlan: bool,
    /// IPv6 hop limit (neighbour discovery is only such with 255); 0 for IPv4.
    pub hop_limit: u8,
}

pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

#[inline(always)]
fn direct<T>(ctx: &TcContext, off: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if off > MAX_DIRECT_OFFSET || start + off + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *const T)
}

/// Reads a header: directly from the linear area, else through `bpf_skb_load_bytes`.
///
/// Headers are read as arrays of u16/u32 so the JIT emits one load per field instead of
/// byte loads and shifts. The packet data is only 2-byte aligned after a VLAN tag or an
/// L4 header, but BPF loads need no alignment on the architectures the JIT inlines
/// packet access for, and the verifier checks the bounds, not the alignment.
#[inline(always)]
pub fn read<T: Copy>(ctx: &TcContext, off: usize) -> Option<T> {
    match direct::<T>(ctx, off) {
        // SAFETY: `direct` checked that the whole `T` lies within the packet's linear data;
        // BPF loads need no alignment (see above).
        Some(p) => Some(unsafe { p.read() }),
        None => ctx.load::<T>(off).ok(),
    }
}

/// Non-zero for a GSO packet: one the stack will cut into segments of this size.
#[inline(always)]
fn gso_size(ctx: &TcContext) -> u32 {
    // SAFETY: the context's skb is the kernel's, valid for the whole run.
    unsafe { (*ctx.skb.skb).gso_size }
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

#[inline(always)]
pub fn parse(ctx: &TcContext, pkt: &mut Packet) -> Parsed {
    let Some(eth) = read::<[u16; 7]>(ctx, 0) else {
        return Parsed::Malformed;
    };
    let mut ethertype = u16::from_be(eth[6]);
    let mut l3 = 14usize;
    // A tag the kernel took out of the frame into the skb (VLAN acceleration: veth and
    // most NICs do it) is a tag all the same.
    // SAFETY: the context's skb is the kernel's, valid for the whole run.
    pkt.vlan = unsafe { (*ctx.skb.skb).vlan_present } != 0;
    if is_vlan_tag(ethertype) {
        // A second tag would hide the real protocol from one-tag parsing: refuse it.
        if pkt.vlan {
            return Parsed::Malformed;
        }
        pkt.vlan = true;
        let Some(tag) = read::<[u16; 2]>(ctx, 14) else {
            return Parsed::Malformed;
        };
        ethertype = u16::from_be(tag[1]);
        l3 = 18;
        if is_vlan_tag(ethertype) {
            return Parsed::Malformed;
        }
    }
    match ethertype {
        0x0800 => parse_ipv4(ctx, pkt, l3),
        0x86dd => parse_ipv6(ctx, pkt, l3),
        0x0806 => Parsed::Arp,
        _ => Parsed::NonIp,
    }
}

/// 802.1Q or 802.1ad: the only tags the stack looks through.
#[inline(always)]
fn is_vlan_tag(ethertype: u16) -> bool {
    ethertype == 0x8100 || ethertype == 0x88a8
}

#[inline(always)]
fn parse_ipv4(ctx: &TcContext, pkt: &mut Packet, l3: usize) -> Parsed {
    let Some(h) = read::<[u32; 5]>(ctx, l3) else {
        return Parsed::Malformed;
    };
    let b0 = h[0].to_ne_bytes();
    let ihl = (b0[0] & 0x0f) as usize * 4;
    let mut total_len = be16([b0[2], b0[3]]) as usize;
    // IPv4 BIG TCP: a TCP segment of a GSO packet over 64 KiB carries a total length of 0,
    // and the stack takes the frame's end for the packet's (`iph_totlen`).
    if total_len == 0 && h[2].to_ne_bytes()[1] == proto::TCP && gso_size(ctx) != 0 {
        total_len = ctx.len() as usize - l3;
    }
    if b0[0] >> 4 != 4 || ihl < 20 || total_len < ihl || l3 + total_len > ctx.len() as usize {
        return Parsed::Malformed;
    }
    let b1 = h[1].to_ne_bytes();
    let frag = be16([b1[2], b1[3]]);
    let offset = frag & 0x1fff;
    let more = frag & 0x2000 != 0;
    pkt.protocol = h[2].to_ne_bytes()[1];
    pkt.frag_proto = pkt.protocol;
    pkt.src = [0, 0, V4_MAPPED_WORD, h[3]];
    pkt.dst = [0, 0, V4_MAPPED_WORD, h[4]];
    pkt.frag_id = be16([b1[0], b1[1]]) as u32;
    pkt.fragment = if offset != 0 {
        FRAG_LATER
    } else if more {
        FRAG_FIRST
    } else {
        FRAG_NONE
    };
    // RFC 1858: a fragment at offset 8 could rewrite a TCP header's flags.
    if offset == 1 && pkt.protocol == proto::TCP {
        return Parsed::Malformed;
    }
    parse_l4(ctx, pkt, l3 + ihl, l3 + total_len)
}

#[inline(always)]
fn parse_ipv6(ctx: &TcContext, pkt: &mut Packet, l3: usize) -> Parsed {
    let Some(h) = read::<[u32; 10]>(ctx, l3) else {
        return Parsed::Malformed;
    };
    let b0 = h[0].to_ne_bytes();
    if b0[0] >> 4 != 6 {
        return Parsed::Malformed;
    }
    let b1 = h[1].to_ne_bytes();
    let payload_len = be16([b1[0], b1[1]]) as usize;
    if l3 + 40 + payload_len > ctx.len() as usize {
        return Parsed::Malformed;
    }
    // IPv4-mapped addresses never appear on the wire; here they would alias IPv4 identities.
    if (h[2] == 0 && h[3] == 0 && h[4] == V4_MAPPED_WORD)
        || (h[6] == 0 && h[7] == 0 && h[8] == V4_MAPPED_WORD)
    {
        return Parsed::Malformed;
    }
    pkt.is_v6 = true;
    pkt.hop_limit = b1[3];
    pkt.src = [h[2], h[3], h[4], h[5]];
    pkt.dst = [h[6], h[7], h[8], h[9]];
    let mut next = b1[2];
    let mut off = l3 + 40;
    // A payload length of 0 is a jumbogram (or a BIG TCP packet inside the stack): the
    // frame's end is the packet's.
    let ip_end = if payload_len == 0 {
        ctx.len() as usize
    } else {
        off + payload_len
    };
    // One pass per extension header, plus the one that reaches the upper layer.
    for _ in 0..=MAX_EXT_HEADERS {
        match next {
            // Hop-by-hop, routing, destination options. Mobility, HIP and shim6 (135, 139,
            // 140) are not walked: the stack hands them up as protocols of their own, so
            // they are judged by protocol number, not by a header nested inside them.
            0 | 43 | 60 => {
                let Ok(e) = ctx.load::<[u8; 2]>(off) else {
                    return Parsed::Malformed;
                };
                next = e[0];
                off += (e[1] as usize + 1) * 8;
            }
            44 => {
                let Ok(f) = ctx.load::<[u8; 8]>(off) else {
                    return Parsed::Malformed;
                };
                next = f[0];
                pkt.frag_proto = next;
                let frag = be16([f[2], f[3]]);
                pkt.frag_id = u32::from_be_bytes([f[4], f[5], f[6], f[7]]);
                pkt.fragment = if frag >> 3 != 0 {
                    FRAG_LATER
                } else if frag & 1 != 0 {
                    FRAG_FIRST
                } else {
                    FRAG_NONE
                };
                off += 8;
            }
            // Authentication header: its length counts 4-byte units, minus 2.
            51 => {
                let Ok(e) = ctx.load::<[u8; 2]>(off) else {
                    return Parsed::Malformed;
                };
                next = e[0];
                off += (e[1] as usize + 2) * 4;
            }
            _ => {
                pkt.protocol = next;
                return parse_l4(ctx, pkt, off, ip_end);
            }
        }
        if pkt.fragment == FRAG_LATER {
            // The upper-layer header is in the first fragment; the chain may go on here
            // but nothing after it is needed.
            pkt.protocol = next;
            return Parsed::Ip;
        }
    }
    Parsed::Malformed
}

/// The upper-layer header at `off`, which must end by `ip_end` (the end of the IP packet):
/// bytes past it (Ethernet padding, a trailer) are not the header the receiver reads.
#[inline(always)]
fn parse_l4(ctx: &TcContext, pkt: &mut Packet, off: usize, ip_end: usize) -> Parsed {
    pkt.l4_off = off as u32;
    if pkt.fragment == FRAG_LATER {
        return Parsed::Ip;
    }
    let needed = match pkt.protocol {
        proto::TCP => 20,
        proto::UDP | proto::SCTP | proto::ICMP | proto::ICMPV6 => 8,
        _ => 0,
    };
    if off + needed > ip_end {
        return Parsed::Malformed;
    }
    match pkt.protocol {
        proto::TCP => {
            // The whole minimal header must be there; what is read is in its first 16 bytes.
            let Some(t) = read::<[u32; 5]>(ctx, off) else {
                return Parsed::Malformed;
            };
            let ports = t[0].to_ne_bytes();
            pkt.sport = be16([ports[0], ports[1]]);
            pkt.dport = be16([ports[2], ports[3]]);
            pkt.seq = u32::from_be(t[1]);
            pkt.ack = u32::from_be(t[2]);
            let w = t[3].to_ne_bytes();
            let flags = w[1];
            pkt.tcp_flags = flags;
            pkt.win = be16([w[2], w[3]]);
            // The receiver takes the data offset as the header's length; one under 20 is
            // dropped by its stack anyway, so it only shortens the payload counted here.
            let header = (w[0] >> 4) as usize * 4;
            let payload = ip_end.saturating_sub(off + header.max(20));
            pkt.seg_len = payload as u32
                + (flags & tcp_flags::FIN) as u32
                + ((flags & tcp_flags::SYN) >> 1) as u32;
            pkt.wscale = if flags & tcp_flags::SYN != 0 && header > 20 {
                window_scale(ctx, off + 20, (off + header).min(ip_end))
            } else {
                NO_WINDOW_SCALE
            };
        }
        proto::UDP | proto::SCTP => {
            let Some(u) = read::<[u16; 4]>(ctx, off) else {
                return Parsed::Malformed;
            };
            pkt.sport = u16::from_be(u[0]);
            pkt.dport = u16::from_be(u[1]);
        }
        proto::ICMP | proto::ICMPV6 => {
            let Some(i) = read::<[u8; 8]>(ctx, off) else {
                return Parsed::Malformed;
            };
            // ICMP in IPv6 or ICMPv6 in IPv4 means nothing to the stack: a protocol number
            // like any other, judged without ICMP's exemptions.
            if !is_icmp(pkt) {
                return Parsed::Ip;
            }
            pkt.icmp_type = i[0];
            let id = be16([i[4], i[5]]);
            match (pkt.is_v6, i[0]) {
                (false, 8) | (true, 128) => pkt.sport = echo_id(id),
                (false, 0) | (true, 129) => pkt.dport = echo_id(id),
                // RFC 4861: receivers drop neighbour discovery with any other hop limit, so
                // only these are exempt from policy; the rest is judged as ICMPv6.
                (true, 133..=137) if pkt.hop_limit == 255 => return Parsed::NeighborDiscovery,
                // Any other message is keyed by its type as the source port, which no
                // packet the other way has: judged by policy in each direction, it never
                // rides a session (with the address pair alone, a peer's ICMP of any type
                // passed as the reply to ours).
                (_, t) => pkt.sport = 0x8000 | t as u16,
            }
        }
        _ => {}
    }
    Parsed::Ip
}

/// An echo identifier as a port: 0 becomes 1, so that a request with identifier 0, (0, 0),
/// is not its own reverse (a peer's echo request would pass as the reply to ours).
#[inline(always)]
pub fn echo_id(id: u16) -> u16 {
    id.max(1)
}

/// Whether the packet is ICMP of its own IP version: ICMP in IPv4, ICMPv6 in IPv6.
#[inline(always)]
pub fn is_icmp(pkt: &Packet) -> bool {
    if pkt.is_v6 {
        pkt.protocol == proto::ICMPV6
    } else {
        pkt.protocol == proto::ICMP
    }
}

/// Whether an ICMP/ICMPv6 type reports an error about another packet.
#[inline(always)]
pub fn is_icmp_error(pkt: &Packet) -> bool {
    if !is_icmp(pkt) || pkt.fragment == FRAG_LATER {
        return false;
    }
    if pkt.is_v6 {
        matches!(pkt.icmp_type, 1..=4)
    } else {
        matches!(pkt.icmp_type, 3 | 11 | 12)
    }
}

/// Parses the packet quoted in an ICMP error (IP header and the first 8 bytes of L4),
/// as it was sent: its reverse is the flow the error is about.
#[inline(always)]
pub fn parse_icmp_inner(ctx: &TcContext, outer: &Packet, inner: &mut Packet) -> bool {
    let off = outer.l4_off as usize + 8;
    if outer.is_v6 {
        let Ok(h) = ctx.load::<[u32; 10]>(off) else {
            return false;
        };
        if h[0].to_ne_bytes()[0] >> 4 != 6 {
            return false;
        }
        inner.is_v6 = true;
        inner.protocol = h[1].to_ne_bytes()[2];
        inner.src = [h[2], h[3], h[4], h[5]];
        inner.dst = [h[6], h[7], h[8], h[9]];
        inner_ports(ctx, inner, off + 40)
    } else {
        let Ok(h) = ctx.load::<[u32; 5]>(off) else {
            return false;
        };
        let b0 = h[0].to_ne_bytes()[0];
        let ihl = (b0 & 0x0f) as usize * 4;
        if b0 >> 4 != 4 || ihl < 20 {
            return false;
        }
        inner.protocol = h[2].to_ne_bytes()[1];
        inner.src = [0, 0, V4_MAPPED_WORD, h[3]];
        inner.dst = [0, 0, V4_MAPPED_WORD, h[4]];
        inner_ports(ctx, inner, off + ihl)
    }
}

#[inline(always)]
fn inner_ports(ctx: &TcContext, inner: &mut Packet, off: usize) -> bool {
    let Ok(p) = ctx.load::<[u8; 8]>(off) else {
        return false;
    };
    match inner.protocol {
        proto::TCP | proto::UDP | proto::SCTP => {
            inner.sport = be16([p[0], p[1]]);
            inner.dport = be16([p[2], p[3]]);
        }
        proto::ICMP | proto::ICMPV6 => {
            let id = be16([p[4], p[5]]);
            // As `parse` keys echo, but for identifier 0 ([`echo_id`]) and for other ICMP
            // messages: an error quoting those finds no session and is judged by policy.
            // (The slow path sits at the BPF stack limit: even `echo_id` here exceeds it.)
            match p[0] {
                8 | 128 => inner.sport = id,
                0 | 129 => inner.dport = id,
                _ => {}
            }
        }
        _ => {}
    }
    true
}

/// The shift of a SYN's window scale option among the TCP options in `start..end`
/// (RFC 7323), or [`NO_WINDOW_SCALE`]: the session's window check needs it to read the
/// windows that follow (docs/SECURITY.md, "TCP").
///
/// Read with the helper only and without pointer arithmetic on the offset, so that the
/// verifier can take states that differ only in it as one: with direct reads each option
/// layout was a path of its own, and the programs grew past its limit.
#[inline(always)]
fn window_scale(ctx: &TcContext, start: usize, end: usize) -> u8 {
    let mut pos = start;
    for _ in 0..MAX_TCP_OPTIONS {
        if pos + 3 > end {
            break;
        }
        let Ok([kind, len, shift]) = ctx.load::<[u8; 3]>(pos) else {
            break;
        };
        if kind == 3 {
            return if len == 3 { shift } else { NO_WINDOW_SCALE };
        }
        // End of the list, or a length that would not move on.
        if kind == 0 || (kind != 1 && len < 2) {
            break;
        }
        pos += if kind == 1 { 1 } else { len as usize };
    }
    NO_WINDOW_SCALE
}
