//! IPv6 extension-header chains: every order of hop-by-hop (0), routing (43), destination
//! options (60) and authentication (51), with and without a fragment header anywhere in
//! the chain, repeated headers, long headers and headers that run out of the packet.
//!
//! Expected (docs/POLICY.md, "IPv6"): up to 8 extension headers are walked and the packet
//! is judged on the upper-layer header behind them (allowed port passes, denied port is
//! denied, whatever the order, even orders the stack itself would refuse); more than 8, or
//! a chain that ends past the packet, is malformed.

use microseg_common::proto;
use microseg_dataplane::Hook;

use crate::bypass_helpers::*;
use crate::common::*;

/// Every ordering of `items`.
fn permutations(items: &[Ext]) -> Vec<Vec<Ext>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut all = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let head = rest.remove(i);
        for mut tail in permutations(&rest) {
            tail.insert(0, head.clone());
            all.push(tail);
        }
    }
    all
}

fn kinds(chain: &[Ext]) -> Vec<u8> {
    chain.iter().map(|e| e.0).collect()
}

/// Runs TCP to the allowed and to the denied port, and UDP likewise, behind `chain`.
fn assert_judged_on_ports(env: &Env, chain: &[Ext]) {
    let t = |dport| {
        v6_frame(
            web6(),
            db6(),
            chain,
            proto::TCP,
            &tcp_header(40000, dport, 2),
        )
    };
    let u = |dport| v6_frame(web6(), db6(), chain, proto::UDP, &udp_header(40001, dport));
    let what = kinds(chain);
    assert_eq!(
        run(env, Hook::ToWorkload, &t(ALLOWED_TCP)),
        Outcome::Passed,
        "{what:?} TCP"
    );
    assert_eq!(
        run(env, Hook::ToWorkload, &t(DENIED_TCP)),
        Outcome::Denied,
        "{what:?} TCP"
    );
    assert_eq!(
        run(env, Hook::ToWorkload, &u(ALLOWED_UDP)),
        Outcome::Passed,
        "{what:?} UDP"
    );
    assert_eq!(
        run(env, Hook::ToWorkload, &u(DENIED_UDP)),
        Outcome::Denied,
        "{what:?} UDP"
    );
}

#[test]
fn every_order_of_the_walked_headers_is_judged_on_the_upper_layer() {
    let env = Env::with_sessions(&with(POLICY), "db", 1 << 14);
    let four = [ext(0), ext(43), ext(60), ext(51)];
    for chain in permutations(&four) {
        assert_judged_on_ports(&env, &chain);
    }
}

/// A fragment header at every position of every order: an atomic fragment (offset 0, no
/// more fragments) is a whole packet; a first fragment is judged and remembered, and a
/// later fragment of the same datagram follows it.
#[test]
fn a_fragment_header_anywhere_in_any_order_is_judged_on_the_upper_layer() {
    let env = Env::with_sessions(&with(POLICY), "db", 1 << 14);
    let mut id = 1u32;
    for chain in permutations(&[ext(0), ext(43), ext(60)]) {
        for at in 0..=chain.len() {
            let mut atomic = chain.clone();
            atomic.insert(at, frag(0, false, id));
            assert_judged_on_ports(&env, &atomic);
            for (dport, first, later) in [
                (ALLOWED_TCP, Outcome::Passed, Outcome::Passed),
                (DENIED_TCP, Outcome::Denied, Outcome::Denied),
            ] {
                id += 1;
                let mut c = chain.clone();
                c.insert(at, frag(0, true, id));
                let f = v6_frame(web6(), db6(), &c, proto::TCP, &tcp_header(40000, dport, 2));
                assert_eq!(run(&env, Hook::ToWorkload, &f), first, "{:?}", kinds(&c));
                // The later fragment carries only the headers before the fragment header,
                // whose next header names the same first header of the fragmentable part.
                let mut l = chain[..at].to_vec();
                l.push(frag(3, false, id));
                let next = chain.get(at).map_or(proto::TCP, |e| e.0);
                let f = v6_frame(web6(), db6(), &l, next, &[0u8; 16]);
                assert_eq!(
                    run(&env, Hook::ToWorkload, &f),
                    later,
                    "later of {:?}",
                    kinds(&c)
                );
            }
        }
    }
}

#[test]
fn repeated_headers_are_walked_up_to_eight_and_more_are_malformed() {
    let env = env();
    for kind in [0u8, 43, 60, 51] {
        let eight = vec![ext(kind); 8];
        assert_judged_on_ports(&env, &eight);
        let nine = vec![ext(kind); 9];
        let f = v6_frame(
            web6(),
            db6(),
            &nine,
            proto::TCP,
            &tcp_header(1, ALLOWED_TCP, 2),
        );
        assert_eq!(
            run(&env, Hook::ToWorkload, &f),
            Outcome::Malformed,
            "9 x {kind}"
        );
    }
    // Two first-fragment headers (nested fragmentation): judged on what is behind both.
    assert_judged_on_ports(&env, &[frag(0, true, 900), frag(0, true, 901)]);
    // A later-fragment header anywhere makes the packet a later fragment: with no first
    // fragment remembered for it, it is dropped, even with an allowed TCP header behind.
    for chain in [
        vec![frag(0, true, 910), frag(5, false, 911)],
        vec![frag(5, true, 912), frag(0, true, 913)],
        vec![ext(0), frag(5, false, 914), ext(60)],
    ] {
        let f = v6_frame(
            web6(),
            db6(),
            &chain,
            proto::TCP,
            &tcp_header(1, ALLOWED_TCP, 2),
        );
        assert_eq!(
            run(&env, Hook::ToWorkload, &f),
            Outcome::Orphan,
            "{:?}",
            kinds(&chain)
        );
    }
}

/// Long headers push the upper layer past what the parser reads directly (256 bytes); the
/// verdict must not change with the distance.
#[test]
fn long_extension_headers_are_walked_to_the_upper_layer() {
    let env = env();
    for len_units in [1u8, 31, 32, 255] {
        let mut long = vec![0u8; (len_units as usize + 1) * 8];
        long[1] = len_units;
        assert_judged_on_ports(&env, &[ext(0), (60, long.clone())]);
        assert_judged_on_ports(&env, &[(43, long.clone()), ext(60), frag(0, false, 7)]);
    }
}

/// A header whose length runs past the end of the IP packet (into Ethernet padding or past
/// the frame) cannot be followed: malformed, never judged on bytes outside the packet.
#[test]
fn a_header_running_out_of_the_packet_is_malformed() {
    let env = env();
    let mut long = vec![0u8; 8];
    long[1] = 2; // claims 24 bytes, has 8 before the upper layer
    let f = v6_frame(
        web6(),
        db6(),
        &[(60, long)],
        proto::TCP,
        &tcp_header(1, ALLOWED_TCP, 2),
    );
    assert_eq!(run(&env, Hook::ToWorkload, &f), Outcome::Malformed);
    // The same chain whole, then declared 8 bytes short, the rest left in the frame as
    // padding: the TCP header ends past the packet.
    let mut f = v6_frame(
        web6(),
        db6(),
        &[ext(0)],
        proto::TCP,
        &tcp_header(1, ALLOWED_TCP, 2),
    );
    f[18..20].copy_from_slice(&20u16.to_be_bytes());
    assert_eq!(run(&env, Hook::ToWorkload, &f), Outcome::Malformed);
    // An extension header that starts in the padding.
    let mut f = v6_frame(
        web6(),
        db6(),
        &[ext(0), ext(60)],
        proto::UDP,
        &udp_header(1, 53),
    );
    f[18..20].copy_from_slice(&8u16.to_be_bytes());
    assert_eq!(run(&env, Hook::ToWorkload, &f), Outcome::Malformed);
}

/// Next headers that are not walked are the protocol: ESP (50) and no-next-header (59)
/// are judged by protocol number with no ports, and db has no rule for them.
#[test]
fn headers_not_walked_are_judged_as_protocols() {
    let env = env();
    for p in [50u8, 59, 135] {
        let f = v6_frame(
            web6(),
            db6(),
            &[ext(0), ext(60)],
            p,
            &tcp_header(1, ALLOWED_TCP, 2),
        );
        assert_eq!(
            run(&env, Hook::ToWorkload, &f),
            Outcome::Denied,
            "next header {p}"
        );
    }
}
