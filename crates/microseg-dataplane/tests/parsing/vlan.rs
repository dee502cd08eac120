//! VLAN-tagged frames: one tag is looked through, two are dropped.

use microseg_dataplane::{packet::*, Hook};

use crate::common::*;
use crate::helpers::*;

#[test]
fn vlan_tagged_frames_are_judged_by_their_inner_packet() {
    let env = env();
    assert!(ingress(
        &env,
        &Frame::tcp(web4(), db4(), 40000, 80, TCP_SYN).with_vlan(100)
    ));
    assert!(!ingress(
        &env,
        &Frame::tcp(web4(), db4(), 40000, 81, TCP_SYN).with_vlan(100)
    ));
    assert!(ingress(
        &env,
        &Frame::tcp(web6(), db6(), 40000, 80, TCP_SYN).with_vlan(4094)
    ));
    assert!(!ingress(
        &env,
        &Frame::tcp(web6(), db6(), 40000, 81, TCP_SYN).with_vlan(4094)
    ));
    // 802.1ad outer tag alone is one tag too.
    let mut qinq = Frame::udp(web4(), db4(), 40000, 53).with_vlan(7).bytes();
    qinq[12..14].copy_from_slice(&0x88a8u16.to_be_bytes());
    assert!(passes(&env, Hook::ToWorkload, &qinq));
    let s = stats(&env);
    assert_eq!(s.vlan, 5);
    assert_eq!((s.allowed(), s.denied(), s.parse_errors), (3, 2, 0));
}

/// Inserts a second 802.1Q tag after the first one.
fn double_tag(mut frame: Vec<u8>, outer: u16) -> Vec<u8> {
    let mut tag = outer.to_be_bytes().to_vec();
    tag.extend_from_slice(&[0, 5]);
    frame.splice(12..12, tag);
    frame
}

#[test]
fn double_tagged_frames_are_dropped() {
    let env = env();
    let inner = Frame::tcp(web4(), db4(), 40000, 80, TCP_SYN)
        .with_vlan(100)
        .bytes();
    assert_malformed(
        &env,
        Hook::ToWorkload,
        &double_tag(inner.clone(), 0x8100),
        "802.1Q in 802.1Q",
    );
    assert_malformed(
        &env,
        Hook::ToWorkload,
        &double_tag(inner, 0x88a8),
        "802.1Q in 802.1ad",
    );
    // On the egress side too, even from the workload's own address.
    let out = Frame::tcp(db4(), web4(), 80, 40000, TCP_SYN | TCP_ACK)
        .with_vlan(100)
        .bytes();
    assert_malformed(
        &env,
        Hook::FromWorkload,
        &double_tag(out, 0x8100),
        "egress double tag",
    );
}
