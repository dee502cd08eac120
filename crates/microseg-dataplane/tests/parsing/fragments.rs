//! IPv4 and IPv6 fragments: later fragments follow the verdict of their first.

use microseg_dataplane::{packet::*, Hook};

use crate::common::*;
use crate::helpers::*;

#[test]
fn ipv4_fragments_follow_their_first_fragment() {
    let env = env();
    // Allowed datagram: first fragment carries port 80; later ones carry no ports.
    let first = Frame::tcp(web4(), db4(), 40000, 80, TCP_SYN).fragment(0, true, 0x1111);
    assert!(ingress(&env, &first));
    let mid = Frame::tcp(web4(), db4(), 0, 0, 0).fragment(185, true, 0x1111);
    let last = Frame::tcp(web4(), db4(), 0, 0, 0).fragment(370, false, 0x1111);
    assert!(ingress(&env, &mid), "later fragment of an allowed datagram");
    assert!(ingress(&env, &last), "last fragment of an allowed datagram");
    // Denied datagram: its later fragments are dropped too.
    let first_bad = Frame::udp(web4(), db4(), 40000, 54).fragment(0, true, 0x2222);
    assert!(!ingress(&env, &first_bad));
    let later_bad = Frame::udp(web4(), db4(), 0, 0).fragment(185, false, 0x2222);
    assert!(
        !ingress(&env, &later_bad),
        "later fragment of a denied datagram"
    );
    let s = stats(&env);
    assert_eq!(s.fragments_dropped, 0);
    // A later fragment whose first fragment was never seen: dropped and counted.
    let orphan = Frame::tcp(web4(), db4(), 0, 0, 0).fragment(185, false, 0x3333);
    assert!(!ingress(&env, &orphan));
    // Same id, other protocol: not the same datagram.
    let other_proto = Frame::udp(web4(), db4(), 0, 0).fragment(185, false, 0x1111);
    assert!(!ingress(&env, &other_proto));
    let s = stats(&env);
    assert_eq!(s.fragments_dropped, 2);
    // Counted: both first fragments and every later one.
    assert_eq!(s.fragments, 2 + 2 + 1 + 2);
    assert_eq!(env.dp.fragment_count(), 2);
    assert_eq!(s.parse_errors, 0);
}

#[test]
fn ipv4_tcp_fragment_at_offset_one_is_malformed() {
    let env = env();
    let first = Frame::tcp(web4(), db4(), 40000, 80, TCP_SYN).fragment(0, true, 0x4444);
    assert!(ingress(&env, &first));
    // It could overwrite the flags of the allowed first fragment's TCP header (RFC 1858).
    let overlap = Frame::tcp(web4(), db4(), 0, 0, 0).fragment(1, false, 0x4444);
    assert_malformed(
        &env,
        Hook::ToWorkload,
        &overlap.bytes(),
        "TCP fragment at offset 1",
    );
}

#[test]
fn ipv6_fragments_follow_their_first_fragment() {
    let env = env();
    let first = Frame::tcp(web6(), db6(), 40000, 80, TCP_SYN).fragment(0, true, 0xabcdef);
    assert!(ingress(&env, &first));
    let later = Frame::tcp(web6(), db6(), 0, 0, 0).fragment(181, false, 0xabcdef);
    assert!(
        ingress(&env, &later),
        "later fragment of an allowed datagram"
    );
    // Behind other extension headers too.
    let first_ext = Frame::udp(web6(), db6(), 40000, 53)
        .with_ipv6_ext(&[0, 60])
        .fragment(0, true, 7);
    assert!(ingress(&env, &first_ext));
    let later_ext = Frame::udp(web6(), db6(), 0, 0)
        .with_ipv6_ext(&[0, 60])
        .fragment(10, false, 7);
    assert!(ingress(&env, &later_ext));
    let first_bad = Frame::tcp(web6(), db6(), 40000, 81, TCP_SYN).fragment(0, true, 0x99);
    assert!(!ingress(&env, &first_bad));
    let later_bad = Frame::tcp(web6(), db6(), 0, 0, 0).fragment(181, false, 0x99);
    assert!(
        !ingress(&env, &later_bad),
        "later fragment of a denied datagram"
    );
    let orphan = Frame::tcp(web6(), db6(), 0, 0, 0).fragment(181, false, 0x100);
    assert!(!ingress(&env, &orphan));
    let s = stats(&env);
    assert_eq!(s.fragments_dropped, 1);
    assert_eq!(s.parse_errors, 0);
}
