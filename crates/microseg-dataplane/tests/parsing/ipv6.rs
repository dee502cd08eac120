//! IPv6: plain, extension headers alone and chained, and IPv4-mapped addresses.

use microseg_dataplane::{packet::*, Hook};

use crate::common::*;
use crate::helpers::*;

#[test]
fn ipv6_plain_is_judged_on_its_ports() {
    let env = env();
    assert!(ingress(
        &env,
        &Frame::tcp(web6(), db6(), 40000, 80, TCP_SYN)
    ));
    assert!(!ingress(
        &env,
        &Frame::tcp(web6(), db6(), 40000, 81, TCP_SYN)
    ));
    assert!(ingress(&env, &Frame::udp(web6(), db6(), 40000, 53)));
    assert!(!ingress(&env, &Frame::udp(web6(), db6(), 40000, 54)));
    assert!(ingress(&env, &Frame::echo_request(web6(), db6(), 9)));
    assert_eq!(stats(&env).parse_errors, 0);
}

#[test]
fn every_ipv6_extension_header_kind_is_walked() {
    let env = env();
    // Hop-by-hop, routing, destination options, authentication.
    for ext in [0u8, 43, 60, 51] {
        let ok = Frame::tcp(web6(), db6(), 40000, 80, TCP_SYN).with_ipv6_ext(&[ext]);
        assert!(
            ingress(&env, &ok),
            "extension header {ext}: allowed port dropped"
        );
        let bad = Frame::tcp(web6(), db6(), 40001, 81, TCP_SYN).with_ipv6_ext(&[ext]);
        assert!(
            !ingress(&env, &bad),
            "extension header {ext}: denied port passed"
        );
    }
    assert_eq!(stats(&env).parse_errors, 0);
}

#[test]
fn mobility_hip_and_shim6_are_judged_as_protocols_not_walked() {
    let env = env();
    // The stack hands these up as protocols of their own: a TCP header behind one is not
    // what the workload receives, so it must not be what the packet is judged on.
    for ext in [135u8, 139, 140] {
        let hidden = Frame::tcp(web6(), db6(), 40000, 80, TCP_SYN).with_ipv6_ext(&[ext]);
        assert!(
            !ingress(&env, &hidden),
            "next header {ext}: judged on the TCP header behind it"
        );
    }
    assert_eq!(stats(&env).parse_errors, 0);
}

#[test]
fn ipv6_extension_header_chains_are_walked_up_to_eight() {
    let env = env();
    let chain = [0u8, 60, 43, 51, 60];
    assert!(ingress(
        &env,
        &Frame::udp(web6(), db6(), 40000, 53).with_ipv6_ext(&chain)
    ));
    assert!(!ingress(
        &env,
        &Frame::udp(web6(), db6(), 40000, 54).with_ipv6_ext(&chain)
    ));
    let eight = [0u8, 60, 43, 51, 60, 43, 51, 60];
    assert!(
        ingress(
            &env,
            &Frame::udp(web6(), db6(), 40000, 53).with_ipv6_ext(&eight)
        ),
        "8 headers"
    );
    assert!(!ingress(
        &env,
        &Frame::udp(web6(), db6(), 40000, 54).with_ipv6_ext(&eight)
    ));
    assert_eq!(stats(&env).parse_errors, 0);
    // Beyond the limit the packet cannot be judged: dropped, never passed unjudged.
    let nine = [0u8, 60, 43, 51, 60, 43, 51, 60, 60];
    assert_malformed(
        &env,
        Hook::ToWorkload,
        &Frame::udp(web6(), db6(), 40000, 53)
            .with_ipv6_ext(&nine)
            .bytes(),
        "9 headers",
    );
}

#[test]
fn ipv4_mapped_ipv6_addresses_are_dropped() {
    let env = env();
    let mapped_src = Frame::tcp(ip("::ffff:10.1.0.2"), db6(), 40000, 80, TCP_SYN);
    assert_malformed(
        &env,
        Hook::ToWorkload,
        &mapped_src.bytes(),
        "v4-mapped source",
    );
    let mapped_dst = Frame::tcp(web6(), ip("::ffff:10.1.0.3"), 40000, 80, TCP_SYN);
    assert_malformed(
        &env,
        Hook::ToWorkload,
        &mapped_dst.bytes(),
        "v4-mapped destination",
    );
    assert_malformed(
        &env,
        Hook::FromWorkload,
        &Frame::tcp(db6(), ip("::ffff:10.1.0.2"), 80, 1, TCP_SYN).bytes(),
        "egress",
    );
}
