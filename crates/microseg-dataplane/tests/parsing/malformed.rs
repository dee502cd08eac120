//! Truncated and invalid headers at every layer: dropped and counted.

use microseg_dataplane::{packet::*, Hook};

use crate::common::*;
use crate::helpers::*;

/// The kernel's test runner refuses untagged frames too short for the IP header their
/// ethertype announces, so truncated IP headers are sent behind a VLAN tag (the parser
/// takes the same path after the tag). On the wire such frames do arrive.
#[test]
fn truncated_headers_are_dropped_and_counted() {
    let env = env();
    // Ethernet: a VLAN ethertype with its tag cut off (the kernel refuses frames < 14 bytes).
    for cut in [14, 16, 17] {
        let mut eth = Frame::tcp(web4(), db4(), 1, 80, TCP_SYN)
            .with_vlan(3)
            .bytes();
        eth.truncate(cut);
        assert_malformed(
            &env,
            Hook::ToWorkload,
            &eth,
            &format!("VLAN tag cut at {cut}"),
        );
    }
    for (what, full, cut) in [
        (
            "IPv4 header",
            Frame::tcp(web4(), db4(), 1, 80, TCP_SYN)
                .with_vlan(3)
                .bytes(),
            18 + 12,
        ),
        (
            "IPv4 header without addresses",
            Frame::tcp(web4(), db4(), 1, 80, TCP_SYN)
                .with_vlan(3)
                .bytes(),
            18 + 19,
        ),
        (
            "IPv6 header",
            Frame::tcp(web6(), db6(), 1, 80, TCP_SYN)
                .with_vlan(3)
                .bytes(),
            18 + 30,
        ),
        (
            "IPv6 header without destination",
            Frame::tcp(web6(), db6(), 1, 80, TCP_SYN)
                .with_vlan(3)
                .bytes(),
            18 + 39,
        ),
    ] {
        let mut f = full;
        f.truncate(cut);
        assert_malformed(&env, Hook::ToWorkload, &f, what);
        assert_malformed(&env, Hook::FromWorkload, &f, what);
    }
    // L4 headers cut short, with IP lengths that agree (only the L4 header is missing).
    for (src, dst) in [(web4(), db4()), (web6(), db6())] {
        let mut tcp = Frame::tcp(src, dst, 40000, 80, TCP_SYN);
        tcp.l4.truncate(12);
        assert_malformed(&env, Hook::ToWorkload, &tcp.bytes(), "TCP header");
        let mut udp = Frame::udp(src, dst, 40000, 53);
        udp.l4.truncate(6);
        assert_malformed(&env, Hook::ToWorkload, &udp.bytes(), "UDP header");
        let mut sctp = Frame::sctp(src, dst, 40000, 9000);
        sctp.l4.truncate(4);
        assert_malformed(&env, Hook::ToWorkload, &sctp.bytes(), "SCTP header");
        let mut icmp = Frame::echo_request(src, dst, 1);
        icmp.l4.truncate(4);
        assert_malformed(&env, Hook::ToWorkload, &icmp.bytes(), "ICMP header");
        // An IPv6 extension header cut off.
        if src.is_ipv6() {
            let mut ext = Frame::udp(src, dst, 40000, 53).with_ipv6_ext(&[0, 60]);
            ext.l4.clear();
            let mut f = ext.bytes();
            // Hop-by-hop whole, then 1 byte of the destination options header.
            f.truncate(f.len() - 7);
            f[18..20].copy_from_slice(&9u16.to_be_bytes());
            assert_malformed(&env, Hook::ToWorkload, &f, "IPv6 extension header");
        }
    }
    assert_eq!(stats(&env).parse_errors, 3 + 8 + 9);
}

#[test]
fn invalid_ip_headers_are_dropped_and_counted() {
    let env = env();
    let good = Frame::tcp(web4(), db4(), 40000, 80, TCP_SYN).bytes();
    assert!(passes(&env, Hook::ToWorkload, &good));
    for ihl in [0u8, 4] {
        let mut f = good.clone();
        f[14] = 0x40 | ihl;
        assert_malformed(&env, Hook::ToWorkload, &f, &format!("IHL {ihl}"));
    }
    let mut v = good.clone();
    v[14] = 0x65; // version 6 behind an IPv4 ethertype
    assert_malformed(&env, Hook::ToWorkload, &v, "IPv4 version");
    let mut long = good.clone();
    long[16..18].copy_from_slice(&(40u16 + 1).to_be_bytes());
    assert_malformed(
        &env,
        Hook::ToWorkload,
        &long,
        "IPv4 total length beyond the frame",
    );
    let mut short = good.clone();
    short[16..18].copy_from_slice(&19u16.to_be_bytes());
    assert_malformed(
        &env,
        Hook::ToWorkload,
        &short,
        "IPv4 total length below the header",
    );
    // IHL larger than the frame holds.
    let mut big_ihl = good.clone();
    big_ihl[14] = 0x4f;
    assert_malformed(&env, Hook::ToWorkload, &big_ihl, "IHL 15 without options");

    let good6 = Frame::tcp(web6(), db6(), 40000, 80, TCP_SYN).bytes();
    assert!(passes(&env, Hook::ToWorkload, &good6));
    let mut v6 = good6.clone();
    v6[14] = 0x40;
    assert_malformed(&env, Hook::ToWorkload, &v6, "IPv6 version");
    let mut long6 = good6.clone();
    long6[18..20].copy_from_slice(&21u16.to_be_bytes());
    assert_malformed(
        &env,
        Hook::ToWorkload,
        &long6,
        "IPv6 payload length beyond the frame",
    );
}

/// The IP length says where the packet ends; what follows (Ethernet padding, a trailer) is
/// not part of it, so an upper-layer header cut short by that length is malformed, even
/// when the frame holds enough bytes to read one.
#[test]
fn an_upper_layer_header_must_end_within_the_ip_packet() {
    let env = env();
    for (what, frame, l3) in [
        ("TCP in IPv4", Frame::tcp(web4(), db4(), 1, 80, TCP_SYN), 14),
        ("UDP in IPv4", Frame::udp(web4(), db4(), 1, 53), 14),
        ("TCP in IPv6", Frame::tcp(web6(), db6(), 1, 80, TCP_SYN), 14),
    ] {
        let mut f = frame.bytes();
        let v6 = frame.src.is_ipv6();
        // Declare only 4 bytes of the upper layer; the rest of it stays in the frame.
        if v6 {
            f[l3 + 4..l3 + 6].copy_from_slice(&4u16.to_be_bytes());
        } else {
            f[l3 + 2..l3 + 4].copy_from_slice(&24u16.to_be_bytes());
        }
        assert_malformed(&env, Hook::ToWorkload, &f, what);
        assert_malformed(&env, Hook::FromWorkload, &f, what);
    }
    // With its full length declared, the same packet is judged.
    assert!(ingress(&env, &Frame::tcp(web4(), db4(), 1, 80, TCP_SYN)));
}
