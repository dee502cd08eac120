//! The policy every case runs against, frames the `Frame` builder cannot make, and what
//! became of a frame, read from the counters it moved.

use std::net::IpAddr;

use microseg_dataplane::{packet::Frame, Hook};

use crate::common::*;

/// db (on lo) accepts web on TCP 5432, UDP 53, ICMP and ICMPv6, and nothing else; it may
/// call out on TCP 443 and UDP 53 only. So ICMP from anyone but web, every other port and
/// every other protocol are denied (docs/POLICY.md, "How a verdict is reached").
pub const POLICY: &str = r#"
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: db}
spec:
  selector: {matchLabels: {app: db}}
  ingress:
    - action: allow
      from: [{selector: {matchLabels: {app: web}}}]
      ports: [{protocol: TCP, port: 5432}, {protocol: UDP, port: 53}, {protocol: ICMP}, {protocol: ICMPv6}]
  egress: [{action: allow, ports: [{protocol: TCP, port: 443}, {protocol: UDP, port: 53}]}]
"#;

pub const ALLOWED_TCP: u16 = 5432;
pub const DENIED_TCP: u16 = 5433;
pub const ALLOWED_UDP: u16 = 53;
pub const DENIED_UDP: u16 = 54;

pub fn env() -> Env {
    Env::new(&with(POLICY), "db")
}

/// What became of one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// Dropped by a policy verdict (the deny counter moved).
    Denied,
    /// Dropped as malformed (`parse_errors`).
    Malformed,
    /// A later fragment with no remembered first fragment (`fragments_dropped`).
    Orphan,
    /// Egress from an address the workload does not own (`spoofed`).
    Spoofed,
    /// BPF_PROG_TEST_RUN refused the frame (shorter than the kernel's minimum for it).
    Refused,
}

/// Runs `frame` through `hook` of db's interface and says what became of it. A drop that
/// moved no counter fails the test: every drop must be accounted for.
pub fn run(env: &Env, hook: Hook, frame: &[u8]) -> Outcome {
    let before = env.dp.stats().expect("stats");
    let Ok(r) = env.dp.test_run(hook, frame, LO, 1) else {
        return Outcome::Refused;
    };
    let after = env.dp.stats().expect("stats");
    if r.passed() {
        return Outcome::Passed;
    }
    if after.parse_errors > before.parse_errors {
        Outcome::Malformed
    } else if after.fragments_dropped > before.fragments_dropped {
        Outcome::Orphan
    } else if after.spoofed > before.spoofed {
        Outcome::Spoofed
    } else {
        assert_eq!(
            after.denied(),
            before.denied() + 1,
            "dropped without a counted verdict: {frame:02x?}"
        );
        Outcome::Denied
    }
}

/// Into db (its ingress).
pub fn inn(env: &Env, f: &Frame) -> Outcome {
    run(env, Hook::ToWorkload, &f.bytes())
}

/// Out of db (its egress).
pub fn out(env: &Env, f: &Frame) -> Outcome {
    run(env, Hook::FromWorkload, &f.bytes())
}

/// An IPv6 extension header: (type, bytes); the first byte (next header) is filled in
/// when the chain is built.
pub type Ext = (u8, Vec<u8>);

/// Hop-by-hop (0), routing (43), destination options (60) or authentication (51), 8 bytes.
pub fn ext(kind: u8) -> Ext {
    (kind, vec![0u8; 8])
}

/// A fragment header: offset in 8-byte units, more-fragments, id.
pub fn frag(offset_units: u16, more: bool, id: u32) -> Ext {
    let mut b = vec![0u8; 8];
    b[2..4].copy_from_slice(&((offset_units << 3) | more as u16).to_be_bytes());
    b[4..8].copy_from_slice(&id.to_be_bytes());
    (44, b)
}

/// An untagged Ethernet frame holding an IPv6 packet: `exts` in order, then `protocol`
/// with `l4` as its bytes. The payload length covers everything after the fixed header.
pub fn v6_frame(src: IpAddr, dst: IpAddr, exts: &[Ext], protocol: u8, l4: &[u8]) -> Vec<u8> {
    let (IpAddr::V6(s), IpAddr::V6(d)) = (src, dst) else {
        panic!("IPv6 addresses only");
    };
    let mut chain = Vec::new();
    for (i, (_, bytes)) in exts.iter().enumerate() {
        let mut b = bytes.clone();
        b[0] = exts.get(i + 1).map_or(protocol, |e| e.0);
        chain.extend_from_slice(&b);
    }
    chain.extend_from_slice(l4);
    let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x86, 0xdd];
    let mut h = vec![0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&(chain.len() as u16).to_be_bytes());
    h[6] = exts.first().map_or(protocol, |e| e.0);
    h[7] = 64;
    h[8..24].copy_from_slice(&s.octets());
    h[24..40].copy_from_slice(&d.octets());
    f.extend_from_slice(&h);
    f.extend_from_slice(&chain);
    f
}

/// The TCP header `Frame::tcp` builds, alone.
pub fn tcp_header(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    Frame::tcp(web6(), db6(), sport, dport, flags).l4
}

/// The UDP header and payload `Frame::udp` builds, alone.
pub fn udp_header(sport: u16, dport: u16) -> Vec<u8> {
    Frame::udp(web6(), db6(), sport, dport).l4
}
