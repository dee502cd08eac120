//! VLAN and QinQ in every tag combination, and unknown ethertypes. (One 802.1Q or 802.1ad
//! tag, QinQ with an 802.1Q inner tag, a tagged ARP and a tag in the skb are in
//! tests/parsing/vlan.rs and tests/vlan_veth.)
//!
//! Expected (docs/POLICY.md, "VLAN-tagged frames", "Other non-IP frames"): one tag is
//! looked through and the inner packet judged; two or more tags, of any kind, make the
//! frame malformed even when the inner packet would be allowed. Ethertypes that are not
//! IPv4, IPv6, ARP or a VLAN tag are not IP to the stack: they pass as `non_ip`, and are
//! dropped under `--drop-non-ip` (ARP excepted).

use microseg_common::config_flags;
use microseg_dataplane::{packet::*, Hook};

use crate::bypass_helpers::*;
use crate::common::*;

const DOT1Q: u16 = 0x8100;
const DOT1AD: u16 = 0x88a8;

/// `frame` with a tag (`tpid`) pushed outside whatever tags it has.
fn push_tag(mut frame: Vec<u8>, tpid: u16) -> Vec<u8> {
    let mut tag = tpid.to_be_bytes().to_vec();
    tag.extend_from_slice(&7u16.to_be_bytes());
    frame.splice(12..12, tag);
    frame
}

/// `frame` with its (untagged) ethertype replaced.
fn with_ethertype(mut frame: Vec<u8>, ethertype: u16) -> Vec<u8> {
    frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
    frame
}

#[test]
fn one_tag_of_either_kind_is_judged_by_the_inner_packet_in_both_directions() {
    let env = env();
    for tpid in [DOT1Q, DOT1AD] {
        for (src, dst) in [(web4(), db4()), (web6(), db6())] {
            let ok = Frame::tcp(src, dst, 40000, ALLOWED_TCP, TCP_SYN).bytes();
            let bad = Frame::tcp(src, dst, 40001, DENIED_TCP, TCP_SYN).bytes();
            assert_eq!(
                run(&env, Hook::ToWorkload, &push_tag(ok, tpid)),
                Outcome::Passed
            );
            assert_eq!(
                run(&env, Hook::ToWorkload, &push_tag(bad, tpid)),
                Outcome::Denied
            );
        }
        // db's egress allows TCP 443 only.
        let out_bad = Frame::tcp(db4(), ip("192.0.2.9"), 1, 80, TCP_SYN).bytes();
        assert_eq!(
            run(&env, Hook::FromWorkload, &push_tag(out_bad, tpid)),
            Outcome::Denied
        );
        let out_ok = Frame::tcp(db4(), ip("192.0.2.9"), 1, 443, TCP_SYN).bytes();
        assert_eq!(
            run(&env, Hook::FromWorkload, &push_tag(out_ok, tpid)),
            Outcome::Passed
        );
    }
}

#[test]
fn two_or_three_tags_of_any_kind_are_malformed_even_around_an_allowed_packet() {
    let env = env();
    let inner = Frame::tcp(web4(), db4(), 40000, ALLOWED_TCP, TCP_SYN).bytes();
    let inner6 = Frame::udp(web6(), db6(), 40000, ALLOWED_UDP).bytes();
    for outer in [DOT1Q, DOT1AD] {
        for second in [DOT1Q, DOT1AD] {
            for base in [&inner, &inner6] {
                let two = push_tag(push_tag(base.clone(), second), outer);
                for hook in [Hook::ToWorkload, Hook::FromWorkload] {
                    let got = run(&env, hook, &two);
                    assert_eq!(
                        got,
                        Outcome::Malformed,
                        "{outer:x} over {second:x}, {hook:?}"
                    );
                }
                let three = push_tag(two, DOT1Q);
                assert_eq!(run(&env, Hook::ToWorkload, &three), Outcome::Malformed);
            }
        }
    }
    // The old QinQ TPID 0x9100 is no tag to the stack: see the ethertype test below.
}

/// Ethertypes that could carry IP but are not IP to the stack's IP layer: MPLS, PPPoE
/// session, the pre-standard QinQ TPID 0x9100, an 802.3 length field (LLC/SNAP), and an
/// unknown value. Each wraps a packet to a denied port; it passes only as `non_ip`.
#[test]
fn unknown_ethertypes_pass_as_non_ip_and_are_dropped_under_drop_non_ip() {
    let mut env = env();
    let denied = Frame::tcp(web4(), db4(), 40000, DENIED_TCP, TCP_SYN).bytes();
    let types = [0x8847u16, 0x8864, 0x9100, 0x0040, 0xffff];
    for hook in [Hook::ToWorkload, Hook::FromWorkload] {
        for t in types {
            let before = env.dp.stats().unwrap();
            let got = run(&env, hook, &with_ethertype(denied.clone(), t));
            let after = env.dp.stats().unwrap();
            assert_eq!(got, Outcome::Passed, "ethertype {t:#06x}");
            assert_eq!(
                after.non_ip,
                before.non_ip + 1,
                "{t:#06x} counted as non_ip"
            );
            assert_eq!(
                after.session_misses, before.session_misses,
                "{t:#06x} judged as IP"
            );
        }
    }
    env.dp.set_flags(config_flags::DROP_NON_IP).unwrap();
    for hook in [Hook::ToWorkload, Hook::FromWorkload] {
        for t in types {
            let before = env.dp.stats().unwrap();
            let passed = passes(&env, hook, &with_ethertype(denied.clone(), t));
            assert!(!passed, "ethertype {t:#06x} passed under --drop-non-ip");
            let after = env.dp.stats().unwrap();
            assert_eq!(after.non_ip_dropped, before.non_ip_dropped + 1);
        }
        // Tagged, the same.
        let tagged = push_tag(with_ethertype(denied.clone(), 0x8847), DOT1Q);
        assert!(
            !passes(&env, hook, &tagged),
            "tagged MPLS under --drop-non-ip"
        );
        assert!(passes(&env, hook, &arp()), "ARP is exempt");
    }
}

/// An IP ethertype whose header is the other IP version is malformed, not judged as the
/// version the header claims.
#[test]
fn an_ethertype_that_disagrees_with_the_ip_version_is_malformed() {
    let env = env();
    let v6_as_v4 = with_ethertype(Frame::tcp(web6(), db6(), 1, ALLOWED_TCP, 2).bytes(), 0x0800);
    let v4_as_v6 = with_ethertype(Frame::udp(web4(), db4(), 1, ALLOWED_UDP).bytes(), 0x86dd);
    for f in [v6_as_v4, v4_as_v6] {
        assert_eq!(run(&env, Hook::ToWorkload, &f), Outcome::Malformed);
        assert_eq!(
            run(&env, Hook::ToWorkload, &push_tag(f, DOT1Q)),
            Outcome::Malformed
        );
    }
}
