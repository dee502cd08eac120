//! Odd and malformed frames: a scenario packet's frame cut, overwritten, tagged, given
//! options or extension headers, or replaced by random bytes; and the reference's reading of
//! any frame, by the rules of docs/POLICY.md ("Packets that are not plain TCP/UDP") and
//! docs/SECURITY.md: what is malformed, what passes without a verdict, what a later
//! fragment follows, and the packet policy judges otherwise.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// splitmix64: a frame's mutations come from one seed, so a failing case names its frame.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len())]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
}

fn be16(b: &[u8], at: usize) -> usize {
    u16::from_be_bytes([b[at], b[at + 1]]) as usize
}

fn put16(b: &mut [u8], at: usize, v: usize) {
    b[at..at + 2].copy_from_slice(&(v as u16).to_be_bytes());
}

/// Where the IP header starts (after up to two tags), if the frame is that long.
fn l3_of(b: &[u8]) -> Option<(usize, usize)> {
    let mut at = 12;
    while b.len() >= at + 2 {
        let t = be16(b, at);
        if (t == 0x8100 || t == 0x88a8) && at < 20 {
            at += 4;
            continue;
        }
        return Some((at + 2, t));
    }
    None
}

/// `frame` changed by one to three random mutations.
pub fn mutate(frame: &[u8], seed: u64) -> Vec<u8> {
    let mut r = Rng::new(seed);
    if r.below(20) == 0 {
        let n = r.below(100);
        return r.bytes(n);
    }
    let mut b = frame.to_vec();
    for _ in 0..1 + r.below(3) {
        mutate_once(&mut b, &mut r);
    }
    b
}

fn mutate_once(b: &mut Vec<u8>, r: &mut Rng) {
    let l3 = l3_of(b);
    match r.below(12) {
        // Cut, mostly inside the headers.
        0 => {
            let end = if r.below(4) == 0 {
                b.len()
            } else {
                b.len().min(90)
            };
            b.truncate(r.below(end + 1));
        }
        // A header byte overwritten, or a bit flipped.
        1 => {
            if b.is_empty() {
                return;
            }
            let i = r.below(b.len().min(100));
            if r.below(2) == 0 {
                b[i] = r.byte();
            } else {
                b[i] ^= 1 << r.below(8);
            }
        }
        // A trailer past the IP packet.
        2 => {
            let n = 1 + r.below(48);
            b.extend(r.bytes(n));
        }
        // Another ethertype.
        3 => {
            if let Some((l3, _)) = l3 {
                let t = r.pick(&[
                    0x0800, 0x86dd, 0x0806, 0x8100, 0x88a8, 0x88cc, 0x9100, 0x8847,
                ]);
                let t = if r.below(8) == 0 {
                    r.next() as usize & 0xffff
                } else {
                    t
                };
                put16(b, l3 - 2, t);
            }
        }
        // A VLAN tag in front of the ethertype.
        4 => {
            if b.len() >= 12 {
                let tpid: u16 = r.pick(&[0x8100, 0x88a8]);
                let mut tag = tpid.to_be_bytes().to_vec();
                tag.extend(r.bytes(2));
                b.splice(12..12, tag);
            }
        }
        // The IP length rewritten: random, or agreeing with the frame.
        5 => {
            let Some((l3, t)) = l3 else { return };
            let (at, base) = if t == 0x86dd {
                (l3 + 4, l3 + 40)
            } else {
                (l3 + 2, l3)
            };
            if b.len() >= at + 2 {
                let v = match r.below(3) {
                    0 => r.next() as usize & 0xffff,
                    1 => b.len().saturating_sub(base),
                    _ => (be16(b, at) + r.below(5)).saturating_sub(2),
                };
                put16(b, at, v);
            }
        }
        // IPv4: options (with the header length and total length kept in step, or not).
        6 => {
            let Some((l3, 0x0800)) = l3 else { return };
            if b.len() < l3 + 20 {
                return;
            }
            let words = r.below(11);
            let opts = r.bytes(words * 4);
            b.splice(l3 + 20..l3 + 20, opts);
            if r.below(4) != 0 {
                b[l3] = (b[l3] & 0xf0) | (5 + words) as u8;
                let total = be16(b, l3 + 2) + words * 4;
                put16(b, l3 + 2, total);
            } else {
                b[l3] = (b[l3] & 0xf0) | r.below(16) as u8;
            }
        }
        // IPv6: an extension header in front of the upper layer.
        7 => {
            let Some((l3, 0x86dd)) = l3 else { return };
            if b.len() < l3 + 40 {
                return;
            }
            let kind: u8 = r.pick(&[0, 43, 60, 44, 51, 44, 59, 135, 50]);
            let (len_byte, size) = match kind {
                44 => (0, 8),
                51 => {
                    let n = r.below(3) as u8 + 1;
                    (n, (n as usize + 2) * 4)
                }
                _ => {
                    let n = r.below(3) as u8;
                    (n, (n as usize + 1) * 8)
                }
            };
            let mut h = r.bytes(size);
            h[0] = b[l3 + 6];
            h[1] = if r.below(6) == 0 { r.byte() } else { len_byte };
            if kind == 44 {
                // A first fragment, a later one, or a whole datagram in one fragment.
                let off: u16 = r.pick(&[0, 0, 1, 8, 185]);
                let more = r.below(2) as u16;
                h[2..4].copy_from_slice(&((off << 3) | more).to_be_bytes());
            }
            b[l3 + 6] = kind;
            b.splice(l3 + 40..l3 + 40, h);
            let payload = be16(b, l3 + 4);
            if payload != 0 {
                put16(b, l3 + 4, payload + size);
            }
        }
        // Another protocol or next header.
        8 => {
            let Some((l3, t)) = l3 else { return };
            let at = if t == 0x86dd { l3 + 6 } else { l3 + 9 };
            if b.len() > at {
                b[at] = r.pick(&[6, 17, 132, 1, 58, 47, 59, 0, 44, 43, 60, 51, 135]);
                if r.below(6) == 0 {
                    b[at] = r.byte();
                }
            }
        }
        // IPv4 fragment fields.
        9 => {
            let Some((l3, 0x0800)) = l3 else { return };
            if b.len() >= l3 + 8 {
                let off: usize = r.pick(&[0, 1, 2, 3, 100, 0x1fff]);
                let more = r.below(2) << 13;
                put16(b, l3 + 6, off | more | (r.below(2) << 14));
                put16(b, l3 + 4, r.below(3));
            }
        }
        // A source or destination address of another kind.
        10 => {
            let Some((l3, t)) = l3 else { return };
            let v6 = t == 0x86dd;
            let at = match (v6, r.below(2)) {
                (false, 0) => l3 + 12,
                (false, _) => l3 + 16,
                (true, 0) => l3 + 8,
                (true, _) => l3 + 24,
            };
            let a: Vec<u8> = if v6 {
                let x = r.pick(&[
                    "::",
                    "fe80::1",
                    "::ffff:10.0.0.1",
                    "fd00::1",
                    "2001:db8::1",
                    "ff02::1",
                ]);
                x.parse::<Ipv6Addr>().unwrap().octets().to_vec()
            } else {
                let x = r.pick(&[
                    "0.0.0.0",
                    "10.0.0.1",
                    "10.1.128.1",
                    "255.255.255.255",
                    "127.0.0.1",
                ]);
                x.parse::<Ipv4Addr>().unwrap().octets().to_vec()
            };
            if b.len() >= at + a.len() {
                b[at..at + a.len()].copy_from_slice(&a);
            }
        }
        // ICMP types: errors, echo, neighbour discovery (with hop limit 255 or not).
        _ => {
            let Some((l3, t)) = l3 else { return };
            let (l4, hop) = if t == 0x86dd {
                (l3 + 40, l3 + 7)
            } else {
                (l3 + 20, l3 + 8)
            };
            if b.len() > l4 {
                b[l4] = r.pick(&[
                    0, 3, 5, 8, 11, 12, 13, 1, 2, 4, 128, 129, 133, 134, 135, 136, 137,
                ]);
                b[hop] = r.pick(&[255, 64, 1]);
            }
        }
    }
}

/// The fragment after `b`, a first fragment: the same headers, the fragment offset moved
/// past the first's (the first fragment header of an IPv6 chain is the one moved).
pub fn later_of(b: &[u8]) -> Option<Vec<u8>> {
    let (l3, ethertype) = match be16(b, 12) {
        0x8100 | 0x88a8 => (18, be16(b, 16)),
        t => (14, t),
    };
    let mut out = b.to_vec();
    if ethertype == 0x0800 {
        let bits = be16(b, l3 + 6);
        put16(&mut out, l3 + 6, (bits & 0xe000) | 185);
        return Some(out);
    }
    let (mut next, mut off) = (b[l3 + 6], l3 + 40);
    while off + 8 <= b.len() {
        match next {
            0 | 43 | 60 => (next, off) = (b[off], off + (b[off + 1] as usize + 1) * 8),
            51 => (next, off) = (b[off], off + (b[off + 1] as usize + 2) * 4),
            44 => {
                let more = be16(b, off + 2) & 1;
                put16(&mut out, off + 2, (185 << 3) | more);
                return Some(out);
            }
            _ => return None,
        }
    }
    None
}

/// A first or later fragment's datagram: addresses, id and protocol (the interface is `lo`).
pub type FragmentKey = (IpAddr, IpAddr, u32, u8);

/// How the data plane must read a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// Dropped and counted in `parse_errors`.
    Malformed,
    /// ARP, neighbour discovery, other ethertypes: passed without a verdict.
    Passes,
    /// A later fragment: follows its datagram's first fragment, else dropped.
    Later(FragmentKey),
    /// An IP packet policy judges. Ports as the data plane keys them (for ICMP, echo
    /// identifiers and message types); `first` when it is a first fragment; `error` for an
    /// ICMP error, judged without a session or an event when it relates to no connection.
    Ip {
        src: IpAddr,
        dst: IpAddr,
        protocol: u8,
        sport: u16,
        dport: u16,
        first: Option<FragmentKey>,
        error: bool,
    },
}

fn addr(b: &[u8]) -> IpAddr {
    match b.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(b).unwrap()),
        _ => IpAddr::from(<[u8; 16]>::try_from(b).unwrap()),
    }
}

/// Fragment state of an IP header: (later fragment, first fragment, id, protocol).
struct Fragment {
    later: bool,
    first: bool,
    id: u32,
    protocol: u8,
}

/// The reference reading of `b`, as it arrives untagged in the skb (a test run).
pub fn read(b: &[u8]) -> Reading {
    if b.len() < 14 {
        return Reading::Malformed;
    }
    let mut ethertype = be16(b, 12);
    let mut l3 = 14;
    if ethertype == 0x8100 || ethertype == 0x88a8 {
        // One tag is looked through; a second is refused (QinQ).
        if b.len() < 18 {
            return Reading::Malformed;
        }
        ethertype = be16(b, 16);
        l3 = 18;
        if ethertype == 0x8100 || ethertype == 0x88a8 {
            return Reading::Malformed;
        }
    }
    match ethertype {
        0x0800 => read_v4(b, l3),
        0x86dd => read_v6(b, l3),
        _ => Reading::Passes,
    }
}

fn read_v4(b: &[u8], l3: usize) -> Reading {
    if b.len() < l3 + 20 {
        return Reading::Malformed;
    }
    let ihl = (b[l3] & 0x0f) as usize * 4;
    let total = be16(b, l3 + 2);
    if b[l3] >> 4 != 4 || ihl < 20 || total < ihl || l3 + total > b.len() {
        return Reading::Malformed;
    }
    let bits = be16(b, l3 + 6);
    let offset = bits & 0x1fff;
    let protocol = b[l3 + 9];
    // RFC 1858: offset 8 bytes could rewrite a TCP header's flags.
    if offset == 1 && protocol == 6 {
        return Reading::Malformed;
    }
    let frag = Fragment {
        later: offset != 0,
        first: offset == 0 && bits & 0x2000 != 0,
        id: be16(b, l3 + 4) as u32,
        protocol,
    };
    let (src, dst) = (addr(&b[l3 + 12..l3 + 16]), addr(&b[l3 + 16..l3 + 20]));
    read_l4(b, src, dst, protocol, l3 + ihl, l3 + total, frag, 0)
}

fn read_v6(b: &[u8], l3: usize) -> Reading {
    if b.len() < l3 + 40 || b[l3] >> 4 != 6 {
        return Reading::Malformed;
    }
    let payload = be16(b, l3 + 4);
    if l3 + 40 + payload > b.len() {
        return Reading::Malformed;
    }
    let (src, dst) = (addr(&b[l3 + 8..l3 + 24]), addr(&b[l3 + 24..l3 + 40]));
    // IPv4-mapped addresses never appear on the wire.
    let mapped = |a: &IpAddr| matches!(a, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some());
    if mapped(&src) || mapped(&dst) {
        return Reading::Malformed;
    }
    let hop = b[l3 + 7];
    let mut next = b[l3 + 6];
    let mut off = l3 + 40;
    // A payload length of 0 ends where the frame does (jumbogram, BIG TCP).
    let ip_end = if payload == 0 { b.len() } else { off + payload };
    let mut frag = Fragment {
        later: false,
        first: false,
        id: 0,
        protocol: 0,
    };
    // Up to 8 extension headers, then the upper layer.
    for _ in 0..=8 {
        match next {
            // Hop-by-hop, routing, destination options: 8-byte units, less one.
            0 | 43 | 60 => {
                if off + 2 > b.len() {
                    return Reading::Malformed;
                }
                next = b[off];
                off += (b[off + 1] as usize + 1) * 8;
            }
            // Authentication: 4-byte units, less two.
            51 => {
                if off + 2 > b.len() {
                    return Reading::Malformed;
                }
                next = b[off];
                off += (b[off + 1] as usize + 2) * 4;
            }
            44 => {
                if off + 8 > b.len() {
                    return Reading::Malformed;
                }
                next = b[off];
                let bits = be16(b, off + 2);
                frag = Fragment {
                    later: bits >> 3 != 0,
                    first: bits >> 3 == 0 && bits & 1 != 0,
                    id: u32::from_be_bytes([b[off + 4], b[off + 5], b[off + 6], b[off + 7]]),
                    protocol: next,
                };
                off += 8;
            }
            protocol => return read_l4(b, src, dst, protocol, off, ip_end, frag, hop),
        }
        if frag.later {
            return Reading::Later((src, dst, frag.id, frag.protocol));
        }
    }
    Reading::Malformed
}

#[allow(clippy::too_many_arguments)]
fn read_l4(
    b: &[u8],
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    off: usize,
    ip_end: usize,
    frag: Fragment,
    hop: u8,
) -> Reading {
    let v6 = src.is_ipv6();
    // IPv4 keys fragments by its protocol, IPv6 by the fragment header's next header.
    let key = (src, dst, frag.id, if v6 { frag.protocol } else { protocol });
    if frag.later {
        return Reading::Later(key);
    }
    let needed = match protocol {
        6 => 20,
        17 | 132 | 1 | 58 => 8,
        _ => 0,
    };
    if off + needed > ip_end {
        return Reading::Malformed;
    }
    let (mut sport, mut dport, mut error) = (0u16, 0u16, false);
    match protocol {
        6 | 17 | 132 => {
            sport = be16(b, off) as u16;
            dport = be16(b, off + 2) as u16;
        }
        // ICMP of the packet's own IP version; the other is a protocol number like any.
        1 | 58 if (protocol == 58) == v6 => {
            let (t, id) = (b[off], (be16(b, off + 4) as u16).max(1));
            match (v6, t) {
                (false, 8) | (true, 128) => sport = id,
                (false, 0) | (true, 129) => dport = id,
                (true, 133..=137) if hop == 255 => return Reading::Passes,
                (_, t) => sport = 0x8000 | t as u16,
            }
            error = if v6 {
                matches!(t, 1..=4)
            } else {
                matches!(t, 3 | 11 | 12)
            };
        }
        _ => {}
    }
    Reading::Ip {
        src,
        dst,
        protocol,
        sport,
        dport,
        first: frag.first.then_some(key),
        error,
    }
}
