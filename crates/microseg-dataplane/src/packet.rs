//! Crafting Ethernet frames for test runs and benchmarks.
//!
//! Checksums are left zero: the classifiers never read them.

use std::net::IpAddr;

use microseg_common::proto;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// An IP packet inside an Ethernet frame, built field by field.
#[derive(Clone, Debug)]
pub struct Frame {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    /// L4 header and payload.
    pub l4: Vec<u8>,
    pub vlan: Option<u16>,
    /// IPv4 options, padded to 4 bytes.
    pub ipv4_options: Vec<u8>,
    /// IPv6 extension header types (0, 43, 60) to put before the upper layer, 8 bytes each.
    pub ipv6_ext: Vec<u8>,
    /// (offset in 8-byte units, more fragments, id).
    pub fragment: Option<(u16, bool, u32)>,
    /// IPv4 TTL or IPv6 hop limit.
    pub hop_limit: u8,
}

impl Frame {
    pub fn new(src: IpAddr, dst: IpAddr, protocol: u8, l4: Vec<u8>) -> Frame {
        Frame {
            src,
            dst,
            protocol,
            l4,
            vlan: None,
            ipv4_options: Vec::new(),
            ipv6_ext: Vec::new(),
            hop_limit: 64,
            fragment: None,
        }
    }

    pub fn tcp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, flags: u8) -> Frame {
        let mut h = vec![0u8; 20];
        h[0..2].copy_from_slice(&sport.to_be_bytes());
        h[2..4].copy_from_slice(&dport.to_be_bytes());
        h[12] = 5 << 4;
        h[13] = flags;
        h[14..16].copy_from_slice(&64240u16.to_be_bytes());
        Frame::new(src, dst, proto::TCP, h)
    }

    pub fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Frame {
        let mut h = vec![0u8; 8 + 32];
        h[0..2].copy_from_slice(&sport.to_be_bytes());
        h[2..4].copy_from_slice(&dport.to_be_bytes());
        h[4..6].copy_from_slice(&40u16.to_be_bytes());
        Frame::new(src, dst, proto::UDP, h)
    }

    pub fn sctp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Frame {
        let mut h = vec![0u8; 12];
        h[0..2].copy_from_slice(&sport.to_be_bytes());
        h[2..4].copy_from_slice(&dport.to_be_bytes());
        Frame::new(src, dst, proto::SCTP, h)
    }

    /// ICMP for IPv4 peers, ICMPv6 for IPv6 ones; `rest` is the 4 bytes after the checksum.
    pub fn icmp(src: IpAddr, dst: IpAddr, icmp_type: u8, code: u8, rest: [u8; 4]) -> Frame {
        let p = if src.is_ipv4() {
            proto::ICMP
        } else {
            proto::ICMPV6
        };
        let mut h = vec![icmp_type, code, 0, 0];
        h.extend_from_slice(&rest);
        h.extend_from_slice(&[0u8; 16]);
        Frame::new(src, dst, p, h)
    }

    /// Neighbour discovery (ICMPv6 133-137) as it is sent: with hop limit 255.
    pub fn neighbour_discovery(src: IpAddr, dst: IpAddr, icmp_type: u8) -> Frame {
        Frame::icmp(src, dst, icmp_type, 0, [0; 4]).with_hop_limit(255)
    }

    pub fn echo_request(src: IpAddr, dst: IpAddr, id: u16) -> Frame {
        let t = if src.is_ipv4() { 8 } else { 128 };
        let mut rest = [0u8; 4];
        rest[0..2].copy_from_slice(&id.to_be_bytes());
        Frame::icmp(src, dst, t, 0, rest)
    }

    pub fn echo_reply(src: IpAddr, dst: IpAddr, id: u16) -> Frame {
        let t = if src.is_ipv4() { 0 } else { 129 };
        let mut rest = [0u8; 4];
        rest[0..2].copy_from_slice(&id.to_be_bytes());
        Frame::icmp(src, dst, t, 0, rest)
    }

    /// An ICMP error (destination unreachable) quoting `about`'s IP header and 8 bytes of L4.
    pub fn icmp_unreachable(src: IpAddr, dst: IpAddr, about: &Frame) -> Frame {
        let t = if src.is_ipv4() { 3 } else { 1 };
        let mut f = Frame::icmp(src, dst, t, 1, [0; 4]);
        f.l4.truncate(8);
        let quoted = about.ip_bytes();
        let header = if about.src.is_ipv4() { 20 } else { 40 };
        f.l4.extend_from_slice(&quoted[..(header + 8).min(quoted.len())]);
        f
    }

    /// TCP: the sequence and acknowledgement numbers (0 and 0 unless set).
    pub fn with_seq(mut self, seq: u32, ack: u32) -> Frame {
        self.l4[4..8].copy_from_slice(&seq.to_be_bytes());
        self.l4[8..12].copy_from_slice(&ack.to_be_bytes());
        self
    }

    /// TCP: the raw window field (64240 unless set).
    pub fn with_window(mut self, window: u16) -> Frame {
        self.l4[14..16].copy_from_slice(&window.to_be_bytes());
        self
    }

    /// TCP: options after the fixed header (padded with end-of-list bytes to 4), the
    /// data offset set to match.
    pub fn with_tcp_options(mut self, options: &[u8]) -> Frame {
        let mut padded = options.to_vec();
        while !padded.len().is_multiple_of(4) {
            padded.push(0);
        }
        let header = (self.l4[12] >> 4) as usize * 4 + padded.len();
        self.l4.splice(20..20, padded);
        self.l4[12] = ((header / 4) as u8) << 4;
        self
    }

    /// TCP: `len` bytes of payload after the header.
    pub fn with_payload(mut self, len: usize) -> Frame {
        self.l4.resize(self.l4.len() + len, 0xab);
        self
    }

    pub fn with_hop_limit(mut self, hop_limit: u8) -> Frame {
        self.hop_limit = hop_limit;
        self
    }

    pub fn with_vlan(mut self, id: u16) -> Frame {
        self.vlan = Some(id);
        self
    }

    pub fn with_ipv4_options(mut self, options: &[u8]) -> Frame {
        self.ipv4_options = options.to_vec();
        while !self.ipv4_options.len().is_multiple_of(4) {
            self.ipv4_options.push(0);
        }
        self
    }

    pub fn with_ipv6_ext(mut self, types: &[u8]) -> Frame {
        self.ipv6_ext = types.to_vec();
        self
    }

    pub fn fragment(mut self, offset_units: u16, more: bool, id: u32) -> Frame {
        self.fragment = Some((offset_units, more, id));
        self
    }

    /// The whole Ethernet frame.
    pub fn bytes(&self) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
        if let Some(id) = self.vlan {
            f.extend_from_slice(&0x8100u16.to_be_bytes());
            f.extend_from_slice(&id.to_be_bytes());
        }
        let ethertype: u16 = if self.src.is_ipv4() { 0x0800 } else { 0x86dd };
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(&self.ip_bytes());
        f
    }

    /// The IP packet alone.
    pub fn ip_bytes(&self) -> Vec<u8> {
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let ihl = 20 + self.ipv4_options.len();
                let total = ihl + self.l4.len();
                let mut h = vec![0u8; 20];
                h[0] = 0x40 | (ihl / 4) as u8;
                h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
                if let Some((off, more, id)) = self.fragment {
                    h[4..6].copy_from_slice(&(id as u16).to_be_bytes());
                    let bits = (off & 0x1fff) | if more { 0x2000 } else { 0 };
                    h[6..8].copy_from_slice(&bits.to_be_bytes());
                }
                h[8] = self.hop_limit;
                h[9] = self.protocol;
                h[12..16].copy_from_slice(&s.octets());
                h[16..20].copy_from_slice(&d.octets());
                h.extend_from_slice(&self.ipv4_options);
                h.extend_from_slice(&self.l4);
                h
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                // Chain: the listed extension headers, then a fragment header, then L4.
                let mut chain: Vec<u8> = self.ipv6_ext.clone();
                if self.fragment.is_some() {
                    chain.push(44);
                }
                let mut ext = Vec::new();
                for (i, t) in chain.iter().enumerate() {
                    let next = chain.get(i + 1).copied().unwrap_or(self.protocol);
                    let mut e = vec![0u8; 8];
                    e[0] = next;
                    if *t == 44 {
                        let (off, more, id) = self.fragment.unwrap_or_default();
                        let bits = (off << 3) | more as u16;
                        e[2..4].copy_from_slice(&bits.to_be_bytes());
                        e[4..8].copy_from_slice(&id.to_be_bytes());
                    }
                    ext.extend_from_slice(&e);
                }
                let first = chain.first().copied().unwrap_or(self.protocol);
                let mut h = vec![0u8; 40];
                h[0] = 0x60;
                h[4..6].copy_from_slice(&((ext.len() + self.l4.len()) as u16).to_be_bytes());
                h[6] = first;
                h[7] = self.hop_limit;
                h[8..24].copy_from_slice(&s.octets());
                h[24..40].copy_from_slice(&d.octets());
                h.extend_from_slice(&ext);
                h.extend_from_slice(&self.l4);
                h
            }
            _ => panic!("source and destination of a frame must be the same family"),
        }
    }
}

/// An ARP request frame.
pub fn arp() -> Vec<u8> {
    let mut f = vec![
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x06,
    ];
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&[0u8; 20]);
    f
}

/// A frame of any other ethertype (LLDP here).
pub fn non_ip() -> Vec<u8> {
    let mut f = vec![
        0x01, 0x80, 0xc2, 0, 0, 0x0e, 0x02, 0, 0, 0, 0, 0x01, 0x88, 0xcc,
    ];
    f.extend_from_slice(&[0u8; 32]);
    f
}
