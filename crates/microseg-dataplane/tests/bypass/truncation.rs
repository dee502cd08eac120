//! Truncated headers at every offset: every prefix of a valid TCP, UDP and ICMP packet,
//! IPv4 (plain and with options) and IPv6 (plain and behind extension headers), untagged
//! and VLAN-tagged. (tests/parsing/malformed.rs cuts a few chosen offsets; this walks all.)
//!
//! Expected (docs/POLICY.md, "Malformed packets"): a cut that leaves the IP length fields
//! as they were makes the packet shorter than it says: malformed, at every length. With the
//! length fields rewritten to agree with the cut, the packet is malformed while its L4
//! header is incomplete, and judged by policy once it is whole (the allowed packet passes,
//! the denied one is denied). The kernel's test runner refuses some frames shorter than
//! their Ethernet and IP headers; a refused frame is not a pass either.

use microseg_common::proto;
use microseg_dataplane::{packet::*, Hook};

use crate::bypass_helpers::*;
use crate::common::*;

/// A packet to cut: the frame, where its IP header starts, where its L4 header starts and
/// how long that header is, and the verdict the whole packet gets.
struct Case {
    what: String,
    frame: Vec<u8>,
    l3: usize,
    l4: usize,
    l4_len: usize,
    whole: Outcome,
}

fn case(what: &str, f: Frame, whole: Outcome) -> Case {
    let l3 = if f.vlan.is_some() { 18 } else { 14 };
    let ip_header = if f.src.is_ipv4() {
        20 + f.ipv4_options.len()
    } else {
        40 + 8 * f.ipv6_ext.len()
    };
    let l4_len = match f.protocol {
        proto::TCP => 20,
        _ => 8,
    };
    Case {
        what: format!("{what} ({}, vlan {})", f.src, f.vlan.is_some()),
        frame: f.bytes(),
        l3,
        l4: l3 + ip_header,
        l4_len,
        whole,
    }
}

fn cases() -> Vec<Case> {
    let mut all = Vec::new();
    let other4 = ip("10.1.0.50");
    let other6 = ip("fd00::50");
    for vlan in [None, Some(3u16)] {
        let tag = |f: Frame| match vlan {
            Some(id) => f.with_vlan(id),
            None => f,
        };
        for (src, dst, other) in [(web4(), db4(), other4), (web6(), db6(), other6)] {
            let opts = |f: Frame| {
                if src.is_ipv4() {
                    f.with_ipv4_options(&[1, 1, 1, 0])
                } else {
                    f.with_ipv6_ext(&[0, 60])
                }
            };
            let tcp = |p| Frame::tcp(src, dst, 40000, p, TCP_SYN);
            let udp = |p| Frame::udp(src, dst, 40000, p);
            for (what, f, whole) in [
                ("TCP allowed", tcp(ALLOWED_TCP), Outcome::Passed),
                ("TCP denied", tcp(DENIED_TCP), Outcome::Denied),
                ("UDP allowed", udp(ALLOWED_UDP), Outcome::Passed),
                ("UDP denied", udp(DENIED_UDP), Outcome::Denied),
                (
                    "ICMP allowed",
                    Frame::echo_request(src, dst, 9),
                    Outcome::Passed,
                ),
                (
                    "ICMP denied",
                    Frame::echo_request(other, dst, 9),
                    Outcome::Denied,
                ),
                (
                    "TCP allowed, options",
                    opts(tcp(ALLOWED_TCP)),
                    Outcome::Passed,
                ),
                (
                    "UDP denied, options",
                    opts(udp(DENIED_UDP)),
                    Outcome::Denied,
                ),
            ] {
                all.push(case(what, tag(f), whole));
            }
        }
    }
    all
}

/// Rewrites the IP length field to end the packet where the frame now ends.
fn agree(frame: &mut [u8], l3: usize) {
    let v6 = frame.len() > l3 && frame[l3] >> 4 == 6;
    if v6 && frame.len() >= l3 + 6 {
        let payload = frame.len().saturating_sub(l3 + 40) as u16;
        frame[l3 + 4..l3 + 6].copy_from_slice(&payload.to_be_bytes());
    } else if !v6 && frame.len() >= l3 + 4 {
        let total = (frame.len() - l3) as u16;
        frame[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
    }
}

/// Lengths the kernel may refuse: shorter than the Ethernet header, or (untagged) than
/// the IP header the ethertype announces.
fn may_be_refused(c: &Case, len: usize) -> bool {
    len < 14 || (c.l3 == 14 && len < c.l4.min(14 + 40))
}

#[test]
fn every_prefix_with_the_original_lengths_is_malformed() {
    let env = Env::with_sessions(&with(POLICY), "db", 1 << 14);
    for c in cases() {
        for hook in [Hook::ToWorkload, Hook::FromWorkload] {
            for len in 0..c.frame.len() {
                let got = run(&env, hook, &c.frame[..len]);
                let ok = got == Outcome::Malformed
                    || (got == Outcome::Refused && may_be_refused(&c, len));
                assert!(ok, "{}: {hook:?}, cut at {len}: {got:?}", c.what);
            }
        }
        assert_eq!(
            run(&env, Hook::ToWorkload, &c.frame),
            c.whole,
            "{} whole",
            c.what
        );
    }
}

#[test]
fn every_prefix_with_agreeing_lengths_is_malformed_until_its_l4_header_is_whole() {
    let env = Env::with_sessions(&with(POLICY), "db", 1 << 14);
    for c in cases() {
        for len in 0..=c.frame.len() {
            let mut f = c.frame[..len].to_vec();
            agree(&mut f, c.l3);
            let got = run(&env, Hook::ToWorkload, &f);
            let want = if len >= c.l4 + c.l4_len {
                c.whole
            } else {
                Outcome::Malformed
            };
            let ok = got == want || (got == Outcome::Refused && may_be_refused(&c, len));
            assert!(
                ok,
                "{}: cut at {len}: {got:?}, want {want:?}: {f:02x?}",
                c.what
            );
        }
    }
}
