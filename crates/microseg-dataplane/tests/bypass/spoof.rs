//! Spoofed source addresses in every shape a packet can take. (Plain TCP/UDP from another
//! workload's or nobody's address, link-local and unspecified sources, and ICMP errors
//! sent in another's name are in tests/spoofing.rs and tests/sessions.rs.)
//!
//! Expected (docs/POLICY.md, "Workload" and "Spoofed sources"): a workload's egress from
//! an address it does not own is dropped and counted as `spoofed` before any exemption or
//! session, whether the packet is tagged, behind extension headers, a fragment, an
//! unknown protocol, a mid-stream TCP packet or a RST. Later fragments carry no new
//! verdict: they follow the spoofed first fragment's deny, remembered under its source.
//!
//! On ingress the data plane trusts the source address: the sender's node checks it.
//! A packet forged from outside the node in an allowed peer's name is judged as that
//! peer's (see docs/SECURITY.md).

use microseg_common::proto;
use microseg_dataplane::{packet::*, Hook};

use crate::bypass_helpers::*;
use crate::common::*;

#[test]
fn egress_from_a_foreign_address_is_dropped_in_every_shape() {
    let env = env();
    for (own, foreign, peer) in [
        (db4(), web4(), ip("192.0.2.10")),
        (db4(), ip("10.1.0.99"), ip("192.0.2.10")),
        (db6(), web6(), ip("2001:db8::10")),
    ] {
        // Allowed for db's own address (TCP 443 out), so only the source can drop them.
        let tcp = |src, flags| Frame::tcp(src, peer, 40000, 443, flags);
        assert_eq!(out(&env, &tcp(own, TCP_SYN)), Outcome::Passed);
        let shapes: Vec<(&str, Vec<u8>)> = vec![
            ("plain SYN", tcp(foreign, TCP_SYN).bytes()),
            ("tagged", tcp(foreign, TCP_SYN).with_vlan(5).bytes()),
            ("mid-stream ACK", tcp(foreign, TCP_ACK).bytes()),
            ("RST", tcp(foreign, TCP_RST).bytes()),
            ("UDP 53", Frame::udp(foreign, peer, 40000, 53).bytes()),
            ("GRE", Frame::new(foreign, peer, 47, vec![0; 8]).bytes()),
            ("echo", Frame::echo_request(foreign, peer, 3).bytes()),
            (
                "first fragment",
                tcp(foreign, TCP_SYN).fragment(0, true, 77).bytes(),
            ),
        ];
        for (what, f) in shapes {
            assert_eq!(
                run(&env, Hook::FromWorkload, &f),
                Outcome::Spoofed,
                "{what} {foreign}"
            );
        }
        // Its later fragment follows the first fragment's deny; under db's own address it
        // is another datagram, with no first to follow.
        let later = Frame::new(foreign, peer, proto::TCP, vec![0; 16]).fragment(4, false, 77);
        assert_eq!(out(&env, &later), Outcome::Denied);
        let later_own = Frame::new(own, peer, proto::TCP, vec![0; 16]).fragment(4, false, 77);
        assert_eq!(out(&env, &later_own), Outcome::Orphan);
        if own.is_ipv6() {
            let chain = [ext(0), ext(60), frag(0, false, 1)];
            let f = v6_frame(
                foreign,
                peer,
                &chain,
                proto::TCP,
                &tcp_header(1, 443, TCP_SYN),
            );
            assert_eq!(
                run(&env, Hook::FromWorkload, &f),
                Outcome::Spoofed,
                "extension headers"
            );
        }
    }
}

/// A foreign source that matches an existing connection's other end (web's address, web's
/// connection to db) is not that connection's packet when db sends it: db's interface
/// holds the connection's ingress leg, not an egress one, so the packet is judged, and
/// its source is not db's.
#[test]
fn egress_in_a_peers_name_does_not_ride_the_peers_session() {
    let env = env();
    assert_eq!(inn(&env, &web_to_db(TCP_SYN)), Outcome::Passed);
    assert_eq!(out(&env, &db_to_web(TCP_SYN | TCP_ACK)), Outcome::Passed);
    assert_eq!(out(&env, &web_to_db(TCP_ACK)), Outcome::Spoofed);
    assert_eq!(out(&env, &web_to_db(TCP_RST)), Outcome::Spoofed);
    // The connection is untouched: it goes on both ways.
    assert_eq!(inn(&env, &web_to_db(TCP_ACK)), Outcome::Passed);
    assert_eq!(out(&env, &db_to_web(TCP_ACK)), Outcome::Passed);
}

/// What holds today: ARP and neighbour discovery always pass (docs/POLICY.md, "Packets
/// that are not plain TCP/UDP"), before the source check, so a workload can announce
/// another workload's address to its link. docs/SECURITY.md lists this as not stopped.
#[test]
fn neighbour_discovery_and_arp_are_exempt_from_the_source_check_today() {
    let env = env();
    let na = Frame::neighbour_discovery(web6(), ip("ff02::1"), 136);
    assert_eq!(out(&env, &na), Outcome::Passed, "NA from web's address");
    assert_eq!(
        run(&env, Hook::FromWorkload, &arp()),
        Outcome::Passed,
        "ARP"
    );
    assert_eq!(env.dp.stats().unwrap().spoofed, 0);
}
