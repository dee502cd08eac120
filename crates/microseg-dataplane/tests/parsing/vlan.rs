//! VLAN-tagged frames: one tag (802.1Q or 802.1ad) is looked through, two are dropped;
//! every tagged frame counts as `vlan`. (A tag the kernel moved into the skb is in
//! `vlan_veth.rs`: a test run always leaves it in the frame.)

use microseg_dataplane::{packet::*, Hook};

use crate::common::*;
use crate::helpers::*;

const DOT1Q: u16 = 0x8100;
const DOT1AD: u16 = 0x88a8;

/// `frame` with a tag (`tpid`, VLAN `id`) pushed outside whatever tags it has.
fn push_tag(mut frame: Vec<u8>, tpid: u16, id: u16) -> Vec<u8> {
    let mut tag = tpid.to_be_bytes().to_vec();
    tag.extend_from_slice(&id.to_be_bytes());
    frame.splice(12..12, tag);
    frame
}

/// Runs a tagged frame into db; (passed, vlan counted, parse error counted).
fn tagged_into_db(env: &Env, frame: &[u8]) -> (bool, bool, bool) {
    let before = stats(env);
    let passed = passes(env, Hook::ToWorkload, frame);
    let after = stats(env);
    (
        passed,
        after.vlan == before.vlan + 1,
        after.parse_errors != before.parse_errors,
    )
}

#[test]
fn an_8021q_tagged_frame_is_judged_by_its_inner_packet_and_counted() {
    let env = env();
    let v4 = |port| Frame::tcp(web4(), db4(), 40000, port, TCP_SYN).with_vlan(100);
    let v6 = |port| Frame::tcp(web6(), db6(), 40000, port, TCP_SYN).with_vlan(4094);
    let cases = [
        (v4(80), true),
        (v4(81), false),
        (v6(80), true),
        (v6(81), false),
    ];
    for (frame, allowed) in cases {
        let (passed, counted, malformed) = tagged_into_db(&env, &frame.bytes());
        assert_eq!(passed, allowed, "{frame:?}");
        assert!(counted && !malformed, "{frame:?}");
    }
    let s = stats(&env);
    assert_eq!((s.vlan, s.allowed(), s.denied()), (4, 2, 2));
}

#[test]
fn an_8021ad_tagged_frame_is_one_tag_too() {
    let env = env();
    let allowed = Frame::udp(web4(), db4(), 40000, 53).bytes();
    let denied = Frame::udp(web4(), db4(), 40000, 54).bytes();
    assert_eq!(
        tagged_into_db(&env, &push_tag(allowed, DOT1AD, 7)),
        (true, true, false)
    );
    assert_eq!(
        tagged_into_db(&env, &push_tag(denied, DOT1AD, 7)),
        (false, true, false)
    );
    let s = stats(&env);
    assert_eq!((s.vlan, s.allowed(), s.denied()), (2, 1, 1));
}

#[test]
fn a_tagged_arp_frame_passes_counted_as_arp_and_vlan() {
    let env = env();
    assert_eq!(
        tagged_into_db(&env, &push_tag(arp(), DOT1Q, 10)),
        (true, true, false)
    );
    assert_eq!(stats(&env).arp, 1);
}

#[test]
fn double_tagged_frames_are_malformed_and_counted_as_vlan() {
    let env = env();
    // To the allowed port: only the second tag can be why it is dropped.
    let inner = Frame::tcp(web4(), db4(), 40000, 80, TCP_SYN)
        .with_vlan(100)
        .bytes();
    for (outer, what) in [(DOT1Q, "802.1Q in 802.1Q"), (DOT1AD, "802.1Q in 802.1ad")] {
        let frame = push_tag(inner.clone(), outer, 5);
        let before = stats(&env).vlan;
        assert_malformed(&env, Hook::ToWorkload, &frame, what);
        assert_eq!(stats(&env).vlan, before + 1, "{what}: counted as vlan");
    }
    // On the egress side too, even from the workload's own address.
    let out = Frame::tcp(db4(), web4(), 80, 40000, TCP_SYN | TCP_ACK)
        .with_vlan(100)
        .bytes();
    assert_malformed(
        &env,
        Hook::FromWorkload,
        &push_tag(out, DOT1Q, 5),
        "egress double tag",
    );
    assert_eq!(stats(&env).vlan, 3);
}
