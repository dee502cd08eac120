//! Tiny, overlapping and out-of-order fragments, and first fragments without their L4
//! header, in IPv4 and IPv6. (In-order datagrams, orphans, the RFC 1858 offset-1 TCP
//! fragment and extension headers before the fragment header are in tests/parsing.)
//!
//! Expected (docs/POLICY.md, "Fragments" and "Malformed packets"): a first fragment is
//! judged like a whole packet and needs its whole TCP/UDP/ICMP header, else it is
//! malformed; a later fragment follows the remembered verdict of its datagram (interface,
//! addresses, id, protocol) and is dropped when there is none, so no fragment reaches a
//! denied destination whatever order or overlap it comes in.

use microseg_common::proto;
use microseg_dataplane::{packet::*, Hook};

use crate::bypass_helpers::*;
use crate::common::*;

/// A later fragment (no L4 header of its own) of datagram `id`, `proto`, at `offset` units.
fn later(src: std::net::IpAddr, dst: std::net::IpAddr, p: u8, offset: u16, id: u32) -> Frame {
    Frame::new(src, dst, p, vec![0u8; 24]).fragment(offset, false, id)
}

#[test]
fn a_tiny_first_fragment_without_its_whole_l4_header_is_malformed() {
    let env = env();
    for (src, dst) in [(web4(), db4()), (web6(), db6())] {
        // TCP with ports but not the flags (8 bytes: RFC 1858's tiny fragment), and a
        // TCP header cut just before its end.
        for keep in [0usize, 4, 8, 13, 19] {
            let mut f = Frame::tcp(src, dst, 40000, ALLOWED_TCP, TCP_SYN);
            f.l4.truncate(keep);
            let f = f.fragment(0, true, 100 + keep as u32);
            assert_eq!(
                inn(&env, &f),
                Outcome::Malformed,
                "TCP first fragment of {keep} bytes"
            );
        }
        for keep in [0usize, 4, 7] {
            let mut u = Frame::udp(src, dst, 40000, ALLOWED_UDP);
            u.l4.truncate(keep);
            assert_eq!(
                inn(&env, &u.fragment(0, true, 200)),
                Outcome::Malformed,
                "UDP {keep}"
            );
            let mut i = Frame::echo_request(src, dst, 1);
            i.l4.truncate(keep);
            assert_eq!(
                inn(&env, &i.fragment(0, true, 300)),
                Outcome::Malformed,
                "ICMP {keep}"
            );
        }
        // And what follows such a first fragment has nothing to follow.
        assert_eq!(
            inn(&env, &later(src, dst, proto::TCP, 2, 108)),
            Outcome::Orphan
        );
        assert_eq!(
            inn(&env, &later(src, dst, proto::UDP, 1, 200)),
            Outcome::Orphan
        );
    }
}

/// IPv6: the first fragment ends inside the chain, so the upper-layer header (or an
/// extension header before it) is in the second fragment (RFC 8200 says to drop it).
#[test]
fn an_ipv6_first_fragment_whose_chain_goes_on_in_the_next_fragment_is_malformed() {
    let env = env();
    for (next, what) in [
        (proto::TCP, "TCP"),
        (60, "destination options"),
        (43, "routing"),
    ] {
        let f = v6_frame(web6(), db6(), &[frag(0, true, 400)], next, &[]);
        assert_eq!(
            run(&env, Hook::ToWorkload, &f),
            Outcome::Malformed,
            "{what}"
        );
    }
    let f = v6_frame(
        web6(),
        db6(),
        &[ext(0), frag(0, true, 401)],
        proto::UDP,
        &[0; 4],
    );
    assert_eq!(
        run(&env, Hook::ToWorkload, &f),
        Outcome::Malformed,
        "4 bytes of UDP"
    );
    // A protocol without ports needs no header: judged by its number (denied here).
    let f = v6_frame(web6(), db6(), &[frag(0, true, 402)], 47, &[]);
    assert_eq!(run(&env, Hook::ToWorkload, &f), Outcome::Denied);
    let f = Frame::new(web4(), db4(), 47, vec![]).fragment(0, true, 403);
    assert_eq!(inn(&env, &f), Outcome::Denied);
}

/// Later fragments before their first are dropped, even of a datagram that will be
/// allowed; once the first has been judged, the rest follow it.
#[test]
fn out_of_order_fragments_wait_for_their_first() {
    let env = env();
    for (src, dst) in [(web4(), db4()), (web6(), db6())] {
        for (dport, verdict) in [
            (ALLOWED_TCP, Outcome::Passed),
            (DENIED_TCP, Outcome::Denied),
        ] {
            let id = 500 + dport as u32;
            let (mid, last) = (
                later(src, dst, proto::TCP, 3, id).fragment(3, true, id),
                later(src, dst, proto::TCP, 6, id),
            );
            assert_eq!(inn(&env, &last), Outcome::Orphan, "last before first");
            assert_eq!(inn(&env, &mid), Outcome::Orphan, "middle before first");
            let first = Frame::tcp(src, dst, 40000, dport, TCP_SYN).fragment(0, true, id);
            assert_eq!(inn(&env, &first), verdict, "first fragment");
            assert_eq!(inn(&env, &last), verdict, "last, sent again");
            assert_eq!(inn(&env, &mid), verdict, "middle, sent again");
        }
    }
}

/// Overlaps: a second first fragment of the same datagram is judged itself and its
/// verdict replaces the first's (the receiver drops overlapping datagrams whole, RFC 5722
/// and Linux for IPv4 too). A later fragment at any offset, overlapping the L4 header or
/// not, follows the datagram; for a denied datagram none passes.
#[test]
fn overlapping_fragments_never_reach_a_denied_port() {
    let env = env();
    for (src, dst) in [(web4(), db4()), (web6(), db6())] {
        // Allowed first, then a first fragment to a denied port under the same id.
        let id = 600;
        let ok = Frame::tcp(src, dst, 40000, ALLOWED_TCP, TCP_SYN).fragment(0, true, id);
        assert_eq!(inn(&env, &ok), Outcome::Passed);
        let bad = Frame::tcp(src, dst, 40000, DENIED_TCP, TCP_SYN).fragment(0, true, id);
        assert_eq!(
            inn(&env, &bad),
            Outcome::Denied,
            "overlapping first fragment"
        );
        for off in [2u16, 3, 100] {
            let l = later(src, dst, proto::TCP, off, id);
            assert_eq!(
                inn(&env, &l),
                Outcome::Denied,
                "after the denied overlap, at {off}"
            );
        }
        // A denied datagram: nothing at any offset passes. (IPv4 TCP at offset 1 is
        // malformed, see tests/parsing/fragments.rs.)
        let id = 601;
        let bad = Frame::udp(src, dst, 40000, DENIED_UDP).fragment(0, true, id);
        assert_eq!(inn(&env, &bad), Outcome::Denied);
        for off in [1u16, 2, 3, 8191] {
            let l = later(src, dst, proto::UDP, off, id);
            assert_eq!(
                inn(&env, &l),
                Outcome::Denied,
                "UDP later fragment at {off}"
            );
        }
        // The denied datagram's id under another protocol, or from another source, is
        // another datagram: nothing remembered, dropped.
        assert_eq!(
            inn(&env, &later(src, dst, proto::TCP, 2, id)),
            Outcome::Orphan
        );
        let other_src = if src.is_ipv4() {
            ip("10.1.0.50")
        } else {
            ip("fd00::50")
        };
        assert_eq!(
            inn(&env, &later(other_src, dst, proto::UDP, 2, id)),
            Outcome::Orphan
        );
    }
}

/// A later fragment whose bytes look like a TCP header to a denied port is still a later
/// fragment: it carries no header the stack reads as one.
#[test]
fn a_later_fragment_dressed_as_a_header_is_judged_as_a_fragment() {
    let env = env();
    for (src, dst) in [(web4(), db4()), (web6(), db6())] {
        let forged = Frame::tcp(src, dst, 40000, ALLOWED_TCP, TCP_SYN).fragment(4, false, 700);
        assert_eq!(
            inn(&env, &forged),
            Outcome::Orphan,
            "with no first fragment"
        );
        let first = Frame::udp(src, dst, 40000, DENIED_UDP).fragment(0, true, 701);
        assert_eq!(inn(&env, &first), Outcome::Denied);
        let mut forged = Frame::udp(src, dst, 40000, ALLOWED_UDP).fragment(4, false, 701);
        forged.l4.truncate(8);
        assert_eq!(inn(&env, &forged), Outcome::Denied, "of a denied datagram");
    }
}
